"""How well each task and loss learns the sample from its example strokes (2-core CPU figures).

    python benchmarks/task_accuracy.py                      # every loss, default settings
    python benchmarks/task_accuracy.py --losses bce,mse --iterations 300

Multi-class and multi-label losses print Dice per class against the ground truth (for
multi-label: of 'present', per class); regression losses print the mean absolute error of the
predicted distance map over the whole volume (the target is known on 3 of 48 slices only),
inside nuclei, and that of predicting the mean of the known values everywhere (the baseline).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from napari_voxseg.core import TrainConfig, dice_per_class, predict, train
from napari_voxseg.core.losses import losses_for
from napari_voxseg.core.synthetic import distance_target, make_sample, multilabel_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--losses", default=None, help="comma-separated (default: all)")
    parser.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sample = make_sample()
    target, mask = distance_target(sample)
    ml_strokes, ml_truth = multilabel_from(sample.strokes), multilabel_from(sample.ground_truth)
    wanted = None if args.losses is None else set(args.losses.split(","))
    print(f"sample {sample.image.shape}, {args.iterations} iterations, seed {args.seed}, "
          f"{args.threads} threads")
    for task in ("multiclass", "multilabel", "regression"):
        for loss in losses_for(task):
            if wanted is not None and loss not in wanted:
                continue
            labels, kwargs = {"multiclass": (sample.strokes, {}),
                              "multilabel": (ml_strokes, {}),
                              "regression": (target, {"mask": mask})}[task]
            config = TrainConfig(task=task, loss=loss, iterations=args.iterations,
                                 seed=args.seed)
            start = time.perf_counter()
            model = train(sample.image, labels, config, **kwargs).model
            seconds = time.perf_counter() - start
            out = predict(model, sample.image)
            if task == "multiclass":
                dice = dice_per_class(out, sample.ground_truth)
                score = "Dice " + " ".join(f"{v:.3f}" for v in dice.values())
            elif task == "multilabel":
                score = "Dice(present) " + " ".join(
                    f"{dice_per_class(o == 2, t == 2, classes=[1])[1]:.3f}"
                    for o, t in zip(out, ml_truth))
            else:
                nuclei = sample.ground_truth == 2
                err = np.abs(out - target)
                base = np.abs(target[mask > 0].mean() - target).mean()
                score = (f"MAE {err.mean():.3f} voxels (inside nuclei {err[nuclei].mean():.3f}; "
                         f"target max {target.max():.1f}; mean-value baseline {base:.3f})")
            print(f"{task:<11} {loss:<12} {seconds:6.1f} s  {score}", flush=True)


if __name__ == "__main__":
    main()
