"""Peak memory of block-wise prediction of zarr volumes of 1, 2 and 4 GB on disk.

    python benchmarks/predict_memory.py [--sizes 1,2,4] [--folder /tmp/voxseg-memory]

Writes float32 zarr volumes of the given sizes (slab by slab, so writing them takes little
memory), then predicts each in a fresh subprocess into a zarr store and prints that process's
peak resident memory (RSS), the time and the voxels per second. Target: flat, <= 1.5 GB.
The network is small and untrained (memory does not depend on what it learned); its tiles are
32 x 64 x 64. Needs about 2 x the sizes in free disk space; the volumes are deleted after.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import torch
from napari_voxseg.core.blocks import predict_blocks
from napari_voxseg.core.models import architecture_from, build_model
torch.manual_seed(0)
arch = architecture_from(in_channels=1, num_classes=3, base_channels=8, depth=3)
model = build_model(arch).eval()
model.config = {"architecture": arch, "task": "multiclass", "patch_size": [32, 64, 64],
                "normalization": {"low": 1.0, "high": 99.0}, "classes": []}
start = time.perf_counter()
predict_blocks(model, sys.argv[1], sys.argv[2], batch_size=4)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak}))
"""


def write_volume(path: Path, gigabytes: float) -> tuple[int, int, int]:
    import zarr

    yx = 1024
    z = max(1, int(round(gigabytes * 2**30 / (4 * yx * yx))))
    store = zarr.open_array(str(path), mode="w", shape=(z, yx, yx), chunks=(32, 256, 256),
                            dtype="float32")
    rng = np.random.default_rng(0)
    for first in range(0, z, 32):
        n = min(32, z - first)
        store[first : first + n] = rng.random((n, yx, yx), dtype=np.float32)
    return (z, yx, yx)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4", help="GB of float32 on disk")
    parser.add_argument("--folder", default="/tmp/voxseg-memory")
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in (float(s) for s in args.sizes.split(",")):
            image, out = folder / f"image-{size:g}GB.zarr", folder / f"labels-{size:g}GB.zarr"
            shape = write_volume(image, size)
            proc = subprocess.run([sys.executable, "-c", CHILD, str(image), str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            voxels = int(np.prod(shape))
            rows.append({"size_gb": size, "shape": list(shape),
                         "peak_rss_gb": round(child["peak_rss_bytes"] / 2**30, 3),
                         "seconds": round(child["seconds"], 1),
                         "mvox_per_s": round(voxels / child["seconds"] / 1e6, 2)})
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(image)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    peaks = [r["peak_rss_gb"] for r in rows]
    print(json.dumps({"peak_rss_gb": peaks, "target_gb": 1.5,
                      "meets_target": max(peaks) <= 1.5,
                      "flat": max(peaks) - min(peaks) < 0.25}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
