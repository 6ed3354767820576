"""Training under torchrun: N processes against one, on the sample, from the command line.

    python benchmarks/torchrun_scaling.py [--processes 1,2] [--iterations 200] [--threads 1]
                                          [--seed 0]

For each process count, trains the sample (one stage, so the figure is the U-Net's own) with
``python -m torch.distributed.run --standalone --nproc-per-node N -m napari_voxseg train`` (one
process: plain ``python -m napari_voxseg train``), and prints a JSON line: wall seconds,
steps per second, patches per second (batch x processes x steps / s) and the Dice per class
of the saved model on the sample against its ground truth. Every process uses ``--threads``
CPU threads, so on a 2-core machine 2 processes x 1 thread is the fair comparison with 1 x 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per process (default: cores / processes)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import os

    import numpy as np

    from napari_voxseg.core import load_model, predict, write_volume
    from napari_voxseg.core.metrics import dice_per_class
    from napari_voxseg.core.synthetic import make_sample

    sample = make_sample()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_volume(tmp / "image.tif", sample.image, sample.voxel_size)
        write_volume(tmp / "strokes.tif", sample.strokes, sample.voxel_size)
        for n in (int(v) for v in args.processes.split(",")):
            threads = args.threads or max(1, (os.cpu_count() or 1) // n)
            launcher = ([sys.executable, "-m", "napari_voxseg"] if n == 1 else
                        [sys.executable, "-m", "torch.distributed.run", "--standalone",
                         "--nproc-per-node", str(n), "-m", "napari_voxseg"])
            out = tmp / f"model{n}"
            began = time.perf_counter()
            proc = subprocess.run([*launcher, "train", tmp / "image.tif", tmp / "strokes.tif",
                                   "--out", out, "--iterations", str(args.iterations),
                                   "--one-stage", "--threads", str(threads),
                                   "--device", args.device, "--seed", str(args.seed)],
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - began
            if proc.returncode != 0:
                print(json.dumps({"processes": n, "error": proc.stderr.strip()[-500:]}))
                continue
            model = load_model(out)
            batch = model.config["training"]["batch_size"]
            dice = dice_per_class(predict(model, sample.image), sample.ground_truth)
            print(json.dumps({
                "processes": n, "seed": args.seed, "threads_each": threads,
                "iterations": args.iterations,
                "seconds": round(seconds, 1),
                "steps_per_s": round(args.iterations / seconds, 2),
                "patches_per_s": round(batch * n * args.iterations / seconds, 2),
                "world_size": model.config["training"]["world_size"],
                "dice": {str(c): round(v, 4) for c, v in dice.items()},
                "mean_dice": round(float(np.mean(list(dice.values()))), 4)}), flush=True)


if __name__ == "__main__":
    main()
