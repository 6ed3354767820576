"""Instance labels from a semantic prediction: which seeds and which watershed, how right, how
fast, and the block-wise version's time and memory.

    python benchmarks/instances.py [--sizes 64x64x64:10,128x256x256:50] [--repeats 3]
                                   [--rough 0.05] [--block 64,128,128] [--halo 16] [--memory]

Synthetic touching balls: random ellipsoids (axes up to 3:2:1, the shortest radius from 4 to
8 or a twelfth of the volume's shortest side), about half of them placed against another one
(centres 0.6-0.9 of the sum of their radii along the line between them apart: a neck), the
others apart from all, with a bumpy surface (``--rough``, a fraction of the radius). The
prediction is the union (class 2 on background 1); the truth gives each voxel to the object
it lies deepest in. An object is right when one found object overlaps it with IoU >= 0.5.
Every method cuts each connected component on its own, as napari_voxseg.core.instances does,
except "whole mask" (one watershed for the whole class). Prints a JSON line per size and
method (counts summed over ``--repeats`` volumes, seeds 0, 1, ...), then a Markdown table.
``--memory``: the peak memory (RSS) of the whole-volume and block-wise versions from a zarr
store, each in a fresh process, on the last volume repeated ``--tiles`` times along each axis.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_voxseg.core import instances
from napari_voxseg.core.instance_blocks import instance_labels_blocks
from napari_voxseg.core.instances import instance_labels, seeds, settings

CHOSEN = "domes h=0.5, h_rel=0.05 (chosen)"


def touching_balls(shape, count, rng, rough=0.05):
    """(prediction (Z, Y, X) uint8 with class 2 = objects, truth (Z, Y, X) int32 1..n)."""
    shape = np.array(shape)
    low, high = 4.0, max(8.0, min(shape) / 12)
    objects = []
    for _ in range(100 * count):
        if len(objects) == count:
            break
        axes = rng.uniform(low, high) * rng.uniform(1, [1, 2, 3])  # up to 3:2:1
        turn = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        partner = None
        if objects and rng.random() < 0.5:  # against an earlier one, by a neck
            partner = int(rng.integers(len(objects)))
            other = objects[partner]
            way = rng.normal(size=3)
            way /= np.linalg.norm(way)
            reach = [1 / np.linalg.norm((way @ t) / a) for a, t in ((other[1], other[2]),
                                                                   (axes, turn))]
            centre = other[0] + rng.uniform(0.6, 0.9) * sum(reach) * way
        else:
            centre = rng.uniform(high, shape - high)
        if np.any(centre < axes.min()) or np.any(centre > shape - axes.min()):
            continue
        if all(np.linalg.norm(centre - c) > a.max() + axes.max() + 1
               for i, (c, a, _) in enumerate(objects) if i != partner):
            objects.append((centre, axes, turn))
    grid = np.indices(tuple(shape), dtype=np.float32).reshape(3, -1).T
    depth = np.full(len(grid), np.inf, np.float32)
    truth = np.zeros(len(grid), np.int32)
    for i, (centre, axes, turn) in enumerate(objects, 1):
        d = np.linalg.norm(((grid - centre) @ turn) / axes, axis=1)  # 1 on the surface
        closer = d < depth
        truth[closer], depth[closer] = i, d[closer]
    noise = ndi.gaussian_filter(rng.normal(size=tuple(shape)).astype(np.float32), 3)
    noise *= rough / noise.std()
    inside = (depth.reshape(tuple(shape)) <= 1 + noise)
    truth = np.where(inside, truth.reshape(tuple(shape)), 0)
    return np.where(inside, 2, 1).astype(np.uint8), truth


def touching(truth: np.ndarray) -> set[int]:
    """The truth objects that touch another one (by a face)."""
    ids = set()
    for axis in range(3):
        here, there = np.moveaxis(truth, axis, 0)[1:], np.moveaxis(truth, axis, 0)[:-1]
        meet = (here > 0) & (there > 0) & (here != there)
        ids |= set(np.unique(here[meet]).tolist()) | set(np.unique(there[meet]).tolist())
    return ids


def score(found: np.ndarray, truth: np.ndarray, against: set[int]) -> np.ndarray:
    """Counts: objects, those touching another, found, right (one found object with
    IoU >= 0.5), right among the touching ones, extra (found objects matching none)."""
    both = (found > 0) & (truth > 0)
    pairs, overlap = np.unique(np.stack([truth[both], found[both]]).astype(np.int64), axis=1,
                               return_counts=True)
    size_t = np.bincount(truth.ravel())
    size_f = np.bincount(found.ravel().astype(np.int64))
    iou = overlap / (size_t[pairs[0]] + size_f[pairs[1]] - overlap)
    right = set(pairs[0][iou >= 0.5].tolist())
    count = len(np.unique(found)) - 1
    return np.array([truth.max(), len(against), count, len(right), len(right & against),
                     count - len(right)])


COUNTS = ("objects", "touching", "found", "right", "right_touching", "extra")


def peaks_split(min_distance):
    """Seeds from peak_local_max with a minimum distance (in voxels), skimage watershed."""
    def split(mask, chosen):
        from skimage.feature import peak_local_max
        from skimage.segmentation import watershed

        padded = np.pad(mask, 1)
        dist = ndi.distance_transform_edt(padded, sampling=chosen.spacing)
        peaks = peak_local_max(dist, min_distance=min_distance, labels=padded.astype(np.int32),
                               exclude_border=False)
        if len(peaks) < 2:
            return mask.astype(np.int32), 1
        markers = np.zeros(padded.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        cut = watershed(-dist, markers, mask=padded)[1:-1, 1:-1, 1:-1]
        return cut, len(peaks)
    return split


def hmaxima_split(h):
    """Seeds: skimage's h_maxima of the distance (the tops of the maxima, so twin tops are two
    seeds), skimage watershed."""
    def split(mask, chosen):
        from skimage.morphology import h_maxima
        from skimage.segmentation import watershed

        padded = np.pad(mask, 1)
        dist = ndi.distance_transform_edt(padded, sampling=chosen.spacing)
        markers, count = ndi.label(h_maxima(dist, h), chosen.structure)
        if count < 2:
            return mask.astype(np.int32), 1
        return watershed(-dist, markers, mask=padded)[1:-1, 1:-1, 1:-1], count
    return split


def ift_split(mask, chosen):
    """The chosen seeds, scipy's watershed_ift on the distance quantized to uint16."""
    if instances.keeps_whole(mask.shape, chosen):
        return mask.astype(np.int32), 1
    padded = np.pad(mask, 1)
    dist = ndi.distance_transform_edt(padded, sampling=chosen.spacing)
    markers, count = seeds(dist, padded, chosen)
    if count < 2:
        return mask.astype(np.int32), 1
    cost = np.where(padded, (1 - dist / dist.max()) * 65534, 65535).astype(np.uint16)
    markers[~padded] = -1
    cut = ndi.watershed_ift(cost, markers, structure=chosen.structure)
    return np.maximum(cut, 0)[1:-1, 1:-1, 1:-1], count


def whole_mask(prediction, chosen):
    """No components: one distance transform and one watershed for the whole class."""
    from skimage.segmentation import watershed

    mask = np.pad(prediction == 2, 1)
    dist = ndi.distance_transform_edt(mask, sampling=chosen.spacing)
    markers, count = seeds(dist, mask, chosen)
    components, _ = ndi.label(mask, chosen.structure)
    lonely = mask & ~np.isin(components, components[markers > 0])  # components with no seed
    markers[lonely] = components[lonely] + count
    return watershed(-dist, markers, mask=mask)[1:-1, 1:-1, 1:-1]


def methods(chosen, block, halo):
    """name -> (prediction -> objects)."""
    def patched(split):
        def run(prediction):
            kept, instances.split = instances.split, split
            try:
                return instance_labels(prediction, [2])
            finally:
                instances.split = kept
        return run

    return {
        "components only": lambda p: instance_labels(p, [2], split_touching=False),
        "peak_local_max md=3": patched(peaks_split(3)),
        "peak_local_max md=4": patched(peaks_split(4)),
        "peak_local_max md=5": patched(peaks_split(5)),
        "h_maxima tops h=0.5": patched(hmaxima_split(0.5)),
        "domes h=0.5, h_rel~0": lambda p: instance_labels(p, [2], h_rel=1e-6),
        CHOSEN: lambda p: instance_labels(p, [2]),
        "chosen + watershed_ift": patched(ift_split),
        "chosen, whole mask": lambda p: whole_mask(p, chosen),
        "chosen, blocks": lambda p: blocks(p, block, halo),
    }


def blocks(prediction, block, halo) -> np.ndarray:
    out = np.zeros(prediction.shape, np.uint32)
    instance_labels_blocks(prediction, out, [2], block_shape=block, halo=halo)
    return out


def one_to_one(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


CHILD = r"""
import json, re, sys, time
import numpy as np, zarr
from napari_voxseg.core.instances import instance_labels
from napari_voxseg.core.instance_blocks import instance_labels_blocks
source, target, how, block, halo = sys.argv[1:6]
start = time.perf_counter()
if how == "whole":
    instance_labels(zarr.open_array(source, mode="r")[:], [2])
elif how == "blocks":
    labels = zarr.open_array(source, mode="r")
    out = zarr.open_array(target, mode="w", shape=labels.shape, chunks=labels.chunks,
                          dtype="uint32")
    instance_labels_blocks(labels, out, [2], block_shape=json.loads(block), halo=int(halo))
# VmHWM: this process's peak RSS (ru_maxrss would keep the parent's, from before exec)
peak = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))
print(json.dumps({"seconds": round(time.perf_counter() - start, 3), "peak_rss_mb": peak // 1024}))
"""


def memory(prediction, block, halo) -> dict:
    """Peak RSS of the whole-volume and block-wise versions, each in a fresh process (and of
    the imports alone: "none")."""
    import zarr

    found = {}
    with tempfile.TemporaryDirectory() as folder:
        source = str(Path(folder) / "labels.zarr")
        store = zarr.open_array(source, mode="w", shape=prediction.shape, chunks=block,
                                dtype="uint8")
        store[:] = prediction
        for how in ("none", "whole", "blocks"):
            out = subprocess.run([sys.executable, "-c", CHILD, source,
                                  str(Path(folder) / "out.zarr"), how, json.dumps(block),
                                  str(halo)], capture_output=True, text=True, check=True)
            found[how] = json.loads(out.stdout)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x64x64:10,128x256x256:50",
                        help="ZxYxX:balls, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="volumes per size (seeds)")
    parser.add_argument("--rough", type=float, default=0.05)
    parser.add_argument("--block", default="64,128,128")
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--tiles", type=int, default=2,
                        help="--memory: the last volume repeated this many times per axis")
    args = parser.parse_args()
    block = [int(b) for b in args.block.split(",")]
    rows = []
    for size in args.sizes.split(","):
        shape, count = size.split(":")
        shape = tuple(int(n) for n in shape.split("x"))
        todo = methods(settings(), block, args.halo)
        totals = {name: np.zeros(len(COUNTS), int) for name in todo}
        seconds = dict.fromkeys(todo, 0.0)
        equal = True
        for seed in range(args.repeats):
            prediction, truth = touching_balls(shape, int(count), np.random.default_rng(seed),
                                               args.rough)
            against = touching(truth)
            found = {}
            for name, run in todo.items():
                start = time.perf_counter()
                found[name] = run(prediction)
                seconds[name] += time.perf_counter() - start
                totals[name] += score(found[name], truth, against)
            equal &= one_to_one(found["chosen, blocks"], found[CHOSEN])
        for name in todo:
            row = {"size": "x".join(map(str, shape)), "method": name, "volumes": args.repeats,
                   "seconds_per_volume": round(seconds[name] / args.repeats, 3),
                   **dict(zip(COUNTS, totals[name].tolist()))}
            if name == "chosen, blocks":
                row.update(block=block, halo=args.halo, equals_whole=bool(equal))
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.memory:
        big = np.tile(prediction, (args.tiles,) * 3)
        print(json.dumps({"size": "x".join(map(str, big.shape)), "block": block,
                          "peak_rss_mb": memory(big, block, args.halo)}), flush=True)
    print("\n| size | method | s / volume | objects (touching) | found | right | right of "
          "touching | extra |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['method']} | {r['seconds_per_volume']} | {r['objects']} "
              f"({r['touching']}) | {r['found']} | {r['right']} | {r['right_touching']} | "
              f"{r['extra']} |")


if __name__ == "__main__":
    main()
