"""How long the scores of ``voxseg evaluate`` take on large volumes.

    python benchmarks/metrics_speed.py [--sizes 128,256,512] [--classes 3]

Labels of random smooth blobs (``--classes`` classes, the first the background around them)
and a prediction that differs from them at the edges; prints one JSON line per size: the
seconds for Dice/IoU/precision/recall alone, for the whole report with the surface distances
(HD95, ASSD), and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
from scipy import ndimage

from napari_voxseg.core.metrics import class_report


def labels(size: int, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.random((classes - 1, *(max(size // 16, 4),) * 3))
    fields = [ndimage.zoom(c, size / c.shape[0], order=1)[:size, :size, :size] for c in coarse]
    out = np.ones((size,) * 3, np.uint8)
    for k, field in enumerate(fields, start=2):
        out[field > 0.6] = k
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="128,256,512")
    parser.add_argument("--classes", type=int, default=3)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        truth = labels(size, args.classes, 0)
        pred = ndimage.median_filter(truth, size=3)  # differs at the edges
        start = time.perf_counter()
        class_report(pred, truth, (2.0, 1.0, 1.0), surface=False)
        overlap = time.perf_counter() - start
        start = time.perf_counter()
        report = class_report(pred, truth, (2.0, 1.0, 1.0))
        whole = time.perf_counter() - start
        print(json.dumps({
            "shape": [size] * 3, "classes": args.classes, "overlap_s": round(overlap, 2),
            "with_surface_s": round(whole, 2),
            "hd95": {c: round(r["hd95"], 3) for c, r in report.items()},
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        }), flush=True)


if __name__ == "__main__":
    main()
