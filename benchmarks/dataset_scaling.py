"""The value of more volumes: Dice on a held-back volume after training on 1, 2 and 4 volumes
of the same kind, with the same number of stroke slices in all.

    python benchmarks/dataset_scaling.py [--case blobs_two_sizes] [--counts 1,2,4]
                                         [--slices 4] [--iterations 300] [--seed 0]

The volumes are the synthetic case made from different seeds (scribbles.py); ``--slices``
slices of skeleton strokes are shared out evenly (4 volumes: one slice each, 1 volume: four).
Prints a JSON line per count (labeled voxels, seconds, Dice per class of the saved model and
of its stage 1 on the held-back volume) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scribbles  # noqa: E402
from scribbles import evenly_spaced, skeleton_strokes  # noqa: E402

from napari_voxseg.core import TrainConfig, predict, train  # noqa: E402
from napari_voxseg.core.metrics import dice_per_class  # noqa: E402

SYNTHETIC = ("blobs_two_sizes", "thin_tubes", "touching_cells", "phases")  # not held-out ones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="blobs_two_sizes", choices=SYNTHETIC)
    parser.add_argument("--counts", default="1,2,4")
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make = getattr(scribbles, args.case)
    counts = [int(c) for c in args.counts.split(",")]
    volumes = [make(seed=100 + i) for i in range(max(counts))]
    held = make(seed=999)
    rows = []
    for count in counts:
        share = [args.slices // count + (i < args.slices % count) for i in range(count)]
        pairs, labeled = [], 0
        for case, slices in zip(volumes[:count], share):
            if slices == 0:
                continue
            z = evenly_spaced(case.truth.shape[0], slices)
            strokes = skeleton_strokes(case.truth, slices=z, seed=args.seed)
            labeled += int(np.count_nonzero(strokes))
            pairs.append((case.image, strokes))
        began = time.perf_counter()
        result = train(pairs, TrainConfig(iterations=args.iterations, seed=args.seed),
                       voxel_size=[volumes[0].voxel_size] * len(pairs))
        seconds = time.perf_counter() - began
        dice = dice_per_class(predict(result.model, held.image), held.truth)
        stage1 = result.model.stage1
        dice1 = dice_per_class(np.argmax(stage1.predict_proba(held.image), axis=0) + 1,
                               held.truth) if stage1 is not None else {}
        row = {"case": args.case, "volumes": count, "labeled_voxels": labeled,
               "seconds": round(seconds, 1),
               "kept": result.model.config["training"].get("validation", {}).get("kept"),
               "dice": {str(c): round(v, 4) for c, v in dice.items()},
               "mean": round(float(np.mean(list(dice.values()))), 4),
               "stage1_mean": round(float(np.mean(list(dice1.values()))), 4) if dice1 else None}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| volumes | labeled voxels | mean Dice (held-back volume) | stage 1 alone | s |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['volumes']} | {r['labeled_voxels']} | {r['mean']:.3f} | "
              f"{r['stage1_mean']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
