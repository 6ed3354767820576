"""A synthetic volume to try voxseg at once: background, round nuclei and curved tubes.

Everything is generated from a seed with numpy, so the sample data, the tests and the benchmarks
need no download. Classes follow the label convention (docs/architecture.md): 1 = background,
2 = nuclei, 3 = tubes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES = ("background", "nucleus", "tube")
SAMPLE_SHAPE = (48, 96, 96)
SAMPLE_VOXEL_SIZE = (0.5, 0.5, 0.5)  # micrometres, (Z, Y, X)


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # float32 (Z, Y, X)
    ground_truth: np.ndarray  # uint8 (Z, Y, X), values 1..3
    strokes: np.ndarray  # uint8 (Z, Y, X), 0 = not annotated
    voxel_size: tuple[float, float, float]
    class_names: tuple[str, ...] = CLASS_NAMES


def _blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding (numpy only)."""
    radius = max(1, int(round(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    out = volume.astype(np.float32)
    for axis in range(out.ndim):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        acc = np.zeros_like(out)
        for k, w in zip(offsets + radius, kernel):
            acc += np.float32(w) * np.take(padded, np.arange(k, k + out.shape[axis]), axis=axis)
        out = acc
    return out


def _erode_2d(mask: np.ndarray, radius: int) -> np.ndarray:
    """Erode a 2D boolean mask by a square of the given radius."""
    out = mask.copy()
    for _ in range(radius):
        shrunk = out.copy()
        shrunk[1:, :] &= out[:-1, :]
        shrunk[:-1, :] &= out[1:, :]
        shrunk[:, 1:] &= out[:, :-1]
        shrunk[:, :-1] &= out[:, 1:]
        shrunk[0, :] = shrunk[-1, :] = False
        shrunk[:, 0] = shrunk[:, -1] = False
        out = shrunk
    return out


def _segment(shape2d, start, end, width: int) -> np.ndarray:
    """A brush stroke: a straight segment of the given width on a 2D canvas."""
    canvas = np.zeros(shape2d, dtype=bool)
    n = int(np.ceil(np.hypot(end[0] - start[0], end[1] - start[1]))) * 2 + 2
    ys = np.clip(np.round(np.linspace(start[0], end[0], n)).astype(int), 0, shape2d[0] - 1)
    xs = np.clip(np.round(np.linspace(start[1], end[1], n)).astype(int), 0, shape2d[1] - 1)
    for dy in range(-(width // 2), width - width // 2):
        for dx in range(-(width // 2), width - width // 2):
            canvas[np.clip(ys + dy, 0, shape2d[0] - 1), np.clip(xs + dx, 0, shape2d[1] - 1)] = True
    return canvas


def make_sample(shape=SAMPLE_SHAPE, seed: int = 0, noise: float = 0.05) -> Sample:
    """Make the sample volume, its ground truth and a few example strokes on three slices."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij",
                             sparse=True)
    truth = np.ones(shape, dtype=np.uint8)

    # Tubes (class 3): wavy dark cylinders running along X, like vessels.
    tubes = []
    for i in range(3):
        y0 = (i + 0.5) * ny / 3 + rng.uniform(-4, 4)
        z0 = rng.uniform(0.3 * nz, 0.7 * nz)
        amp_y, amp_z = rng.uniform(4, 9), rng.uniform(2, 6)
        period, phase = rng.uniform(0.8, 1.5) * nx, rng.uniform(0, 2 * np.pi)
        radius = rng.uniform(4.0, 5.0)
        x = np.arange(nx)
        yc = y0 + amp_y * np.sin(2 * np.pi * x / period + phase)
        zc = z0 + amp_z * np.cos(2 * np.pi * x / period + phase)
        tube = (yy - yc[None, None, :]) ** 2 + (zz - zc[None, None, :]) ** 2 <= radius**2
        truth[tube] = 3
        tubes.append((yc, zc, radius))

    # Nuclei (class 2): ellipsoids that keep clear of each other and of the tubes.
    nuclei: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(400):
        if len(nuclei) == 14:
            break
        r = rng.uniform(5.0, 8.0, size=3) * np.array([0.9, 1.0, 1.0])
        c = rng.uniform(r + 1, np.array(shape) - r - 1)
        if any(np.linalg.norm(c - c2) < (r.max() + r2.max() + 3) for c2, r2 in nuclei):
            continue
        inside = (((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2
                  + ((xx - c[2]) / r[2]) ** 2) <= 1
        if (truth[inside] != 1).any():
            continue
        truth[inside] = 2
        nuclei.append((c, r))

    # Intensities: uneven grey background, grainy bright nuclei, dark tubes; blur and noise.
    illumination = 0.40 + 0.08 * (xx / nx) + 0.04 * np.sin(yy / ny * np.pi)
    grain = _blur(rng.standard_normal(shape).astype(np.float32), 1.5)
    grain /= grain.std() + 1e-6
    image = np.broadcast_to(illumination, shape).astype(np.float32).copy()
    image[truth == 2] = 0.85 + 0.06 * grain[truth == 2]
    image[truth == 3] = 0.08 + 0.04 * grain[truth == 3]
    image = _blur(image, 0.6)
    image += noise * rng.standard_normal(shape).astype(np.float32)
    image = (image * 1000 + 100).astype(np.float32)  # camera-like units

    # Example strokes, as a person would paint them on three slices.
    strokes = np.zeros(shape, dtype=np.uint8)
    for z in (nz // 3, nz // 2, (2 * nz) // 3):
        plane = truth[z]
        for c, r in nuclei:
            dz = (z - c[0]) / r[0]
            if abs(dz) >= 0.8:
                continue
            rr = r[1] * np.sqrt(1 - dz**2)
            seg = _segment(plane.shape, (c[1] - rr, c[2] - 0.6 * rr),
                           (c[1] + rr, c[2] + 0.6 * rr), 2)
            strokes[z][seg & _erode_2d(plane == 2, 1)] = 2
            # ... and the background just beyond it, as people paint across an edge.
            outside = _segment(plane.shape, (c[1] + rr, c[2] + 0.6 * rr),
                               (c[1] + 1.6 * rr, c[2] + rr), 2)
            strokes[z][outside & _erode_2d(plane == 1, 1)] = 1
        for yc, zc, radius in tubes:
            xs = np.flatnonzero(np.abs(zc - z) < 0.7 * radius)
            if xs.size < 4:
                continue
            start = int(rng.integers(0, max(1, xs.size - 40)))
            seg = np.zeros(plane.shape, dtype=bool)
            for x in xs[start : start + 40]:
                y = int(round(yc[x]))
                seg[max(0, y - 1) : y + 1, x] = True
            strokes[z][seg & _erode_2d(plane == 3, 1)] = 3
        # Background: strokes across the slice that stop one voxel short of any object.
        background = _erode_2d(plane == 1, 1)
        for _ in range(8):
            y0, x0 = rng.uniform(0, plane.shape[0]), rng.uniform(0, plane.shape[1])
            angle = rng.uniform(0, np.pi)
            end = (y0 + 30 * np.sin(angle), x0 + 30 * np.cos(angle))
            strokes[z][_segment(plane.shape, (y0, x0), end, 2) & background] = 1
    return Sample(image=image, ground_truth=truth, strokes=strokes, voxel_size=SAMPLE_VOXEL_SIZE)


# ---- the other two tasks, from the same volume --------------------------------------------------

MULTILABEL_NAMES = ("object", "tube")  # overlapping: every tube is also an object


def multilabel_from(labels: np.ndarray) -> np.ndarray:
    """Multi-class labels (0, 1 bg, 2 nucleus, 3 tube) as two overlapping classes, ``(2, Z, Y,
    X)`` uint8 with 0 = not annotated, 1 = absent, 2 = present: 'object' (nucleus or tube) and
    'tube'. Works for strokes and for the ground truth alike."""
    labels = np.asarray(labels)
    annotated = labels > 0
    obj = np.where(annotated, np.where(labels >= 2, 2, 1), 0)
    tube = np.where(annotated, np.where(labels == 3, 2, 1), 0)
    return np.stack([obj, tube]).astype(np.uint8)


def distance_target(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """A regression target and where it is known: the distance (in voxels) from each voxel inside
    a nucleus to the nucleus' surface, 0 outside nuclei, known on the three stroke slices only.
    Returns ``(target float32 (Z, Y, X), mask uint8 (Z, Y, X), 1 = known)``."""
    from scipy.ndimage import distance_transform_edt

    target = distance_transform_edt(sample.ground_truth == 2).astype(np.float32)
    mask = np.zeros(sample.ground_truth.shape, dtype=np.uint8)
    painted = np.flatnonzero(sample.strokes.reshape(sample.strokes.shape[0], -1).any(axis=1))
    mask[painted] = 1
    return target, mask
