"""Dice for volumes as they come: anisotropic voxels, a thin stack (2D vs 3D network), and a
voxel size other than the model's (with and without resampling).

    python benchmarks/shapes_accuracy.py [--iterations 300] [--threads 2]

Prints one JSON line per case: the network chosen, the patch, the training time and the Dice per
class against the sample's ground truth.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_voxseg.core import TrainConfig, predict, train
from napari_voxseg.core.metrics import dice_per_class
from napari_voxseg.core.synthetic import make_sample


def run(name, image, strokes, truth, voxel, iterations, threads, **config):
    began = time.perf_counter()
    model = train(image, strokes, TrainConfig(iterations=iterations, num_threads=threads,
                                              **config), voxel_size=voxel).model
    seconds = time.perf_counter() - began
    dice = dice_per_class(predict(model, image), truth)
    arch = model.config["architecture"]
    print(json.dumps({"case": name, "network": arch["name"], "strides": arch.get("strides"),
                      "patch": model.config["patch_size"], "train_s": round(seconds, 1),
                      "dice": {k: round(v, 3) for k, v in dice.items()}}), flush=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    its, threads = args.iterations, args.threads

    # Anisotropic: every 4th slice of a 96^3 sample, voxels 4x longer in Z.
    tall = make_sample(shape=(96, 96, 96))
    strokes = np.stack([tall.strokes[z: z + 4].max(axis=0) for z in range(0, 96, 4)])
    for network in ("auto", "3d-isotropic"):
        voxel = (2.0, 0.5, 0.5) if network == "auto" else None  # None: plain 3D pooling
        run(f"anisotropic 4x, {network}", tall.image[::4], strokes, tall.ground_truth[::4],
            voxel, its, threads, network="3d" if voxel is None else "auto")

    # A 5-slice stack: the 2D network (auto) against the 3D one.
    s = make_sample()
    thin = slice(20, 25)
    for network in ("auto", "3d"):
        run(f"5 slices, {network}", s.image[thin], s.strokes[thin], s.ground_truth[thin],
            s.voxel_size, its, threads, network=network)

    # The whole sample with the 2D network, for comparison with the 3D default.
    run("sample, 2d", s.image, s.strokes, s.ground_truth, s.voxel_size, its, threads,
        network="2d")

    # A model trained at 0.5 um, an image at 1 um: with and without resampling.
    model = run("sample, 3d", s.image, s.strokes, s.ground_truth, s.voxel_size, its, threads)
    coarse = torch.nn.functional.interpolate(torch.from_numpy(s.image)[None, None],
                                             scale_factor=0.5, mode="trilinear")[0, 0].numpy()
    truth = s.ground_truth[::2, ::2, ::2]
    for resample in (False, True):
        labels = predict(model, coarse, voxel_size=(1.0, 1.0, 1.0), resample=resample)
        dice = dice_per_class(labels, truth)
        print(json.dumps({"case": f"image at 2x the voxel size, resample={resample}",
                          "dice": {k: round(v, 3) for k, v in dice.items()}}), flush=True)


if __name__ == "__main__":
    main()
