"""Batch prediction throughput: ``predict MODEL IMAGE... --out-dir DIR`` (the model loaded
once, one process) against one ``predict MODEL IMAGE --out FILE`` process per file.

    python benchmarks/batch_predict.py [--files 8] [--shape 48,96,96] [--iterations 30]

Trains a small model on the sample once, writes ``--files`` volumes of ``--shape`` (.tif),
then prints a JSON line per way (seconds, volumes per minute) and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(*args) -> float:
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "napari_voxseg", *map(str, args)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--shape", default="48,96,96")
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    import numpy as np

    from napari_voxseg.core import TrainConfig, save_model, train, write_volume
    from napari_voxseg.core.synthetic import make_sample

    shape = tuple(int(v) for v in args.shape.split(","))
    sample = make_sample()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = train(sample.image, sample.strokes, TrainConfig(iterations=args.iterations),
                      voxel_size=sample.voxel_size).model
        save_model(model, tmp / "model")
        rng = np.random.default_rng(0)
        images, folder = [], _mkdir(tmp / "in")
        for i in range(args.files):
            tile = np.resize(np.roll(sample.image, i * 7, axis=2), shape)
            images.append(write_volume(folder / f"v{i}.tif",
                                       tile + rng.normal(0, 0.01, shape).astype(np.float32),
                                       sample.voxel_size))
        out = _mkdir(tmp / "one")
        one = sum(_run("predict", tmp / "model", image, "--out", out / image.name)
                  for image in images)
        many = _run("predict", tmp / "model", *images, "--out-dir", tmp / "many")
        for way, seconds in (("one process per file", one), ("--out-dir, one process", many)):
            print(json.dumps({"way": way, "files": args.files, "shape": shape,
                              "seconds": round(seconds, 1),
                              "volumes_per_minute": round(60 * args.files / seconds, 1)}))
        print(json.dumps({"speed_up": round(one / many, 2)}))


def _mkdir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


if __name__ == "__main__":
    main()
