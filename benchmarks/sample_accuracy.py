"""Default training on the sample data: wall time and Dice per class.

    python benchmarks/sample_accuracy.py [--threads N] [--seeds 0,1,2] [--precision float32]
                                         [--one-stage]

The sample's strokes were drawn by us and cross object edges on purpose: accuracy claims come
from benchmarks/scribble_accuracy.py. The line says which stage the model kept.
"""

import argparse
import time

import torch

from napari_voxseg.core import TrainConfig, dice_per_class, predict, train
from napari_voxseg.core.synthetic import make_sample


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--precision", default="auto", help="auto, float32 or bfloat16")
    parser.add_argument("--one-stage", action="store_true", help="the U-Net alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sample = make_sample()
    print(f"sample {sample.image.shape}, strokes per class "
          f"{[int((sample.strokes == c).sum()) for c in (1, 2, 3)]}, torch threads "
          f"{torch.get_num_threads()}, device {TrainConfig().device}")
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.perf_counter()
        config = TrainConfig(seed=seed, precision=args.precision,
                             two_stage=False if args.one_stage else None)
        result = train(sample.image, sample.strokes, config)
        trained = time.perf_counter() - start
        labels = predict(result.model, sample.image)
        total = time.perf_counter() - start
        dice = dice_per_class(labels, sample.ground_truth)
        kept = result.model.config["training"].get("validation", {}).get("kept", "-")
        print(f"seed {seed}: train {trained:.1f} s, train+predict {total:.1f} s, kept {kept}, "
              "Dice " + ", ".join(f"class {c} {d:.3f}" for c, d in dice.items()))


if __name__ == "__main__":
    main()
