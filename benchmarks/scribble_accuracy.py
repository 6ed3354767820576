"""Accuracy from scribbles drawn the way people draw them: the random-forest reference against
voxseg's first stage, its U-Net alone and the two stages.

    python benchmarks/scribble_accuracy.py [--cases a,b] [--styles skeleton,lines]
                                           [--iterations 300] [--seeds 0]
    python benchmarks/scribble_accuracy.py --held-out     # only when the tuning is over
    python benchmarks/scribble_accuracy.py --task multilabel   # classes that overlap

Scribbles come from benchmarks/scribbles.py (seeded; along the middle of regions on a few
evenly spaced slices, or short straight strokes; never touching a class boundary). For each
case, style and seed it prints one JSON line per method with the Dice per class, the mean, the
labeled fraction and the seconds, then a Markdown table of mean Dice:

- ``forest``: scikit-learn's random forest, 100 trees, on voxseg's filter bank (what ilastik
  does; the reference our users already have),
- ``stage1``: voxseg's first stage alone (forest + per-voxel MLP, the forest's share chosen
  on held-out strokes, then fitted on all of them, as a two-stage run saves it),
- ``unet``: the U-Net trained on the strokes alone (``--one-stage``),
- ``two_stage``: voxseg's default engine: the U-Net given stage 1's probabilities and
  confident voxels, kept only where it beats stage 1 on held-out strokes (the row's ``kept``
  says which one the model is),
- ``refined`` (a diagnostic, not something voxseg offers): the same two-stage run, its U-Net's
  last weights kept whatever the held-out strokes say: how good the refinement really is where
  the judge cannot see (held-out strokes lie inside regions; the errors at their edges).

``--task multilabel`` turns each case into overlapping classes: one layer per class but the
first (present = that class), plus, with three classes or more, one for all of them together
(so a voxel of class 2 is present in two layers); a layer's strokes are the strokes of its
classes (present) and of the others (absent). The forest is then one forest per layer (as
ilastik's users would train one project per layer) and the Dice is that of 'present', per
layer.
Needs scikit-learn and scikit-image, and for the real cases the packages in DATA.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scribbles import (  # noqa: E402
    case_names,
    labeled_fraction,
    line_strokes,
    load_case,
    skeleton_strokes,  # noqa: E402
)
from stage1_classifiers import forest  # noqa: E402

from napari_voxseg.core import TrainConfig, predict, train  # noqa: E402
from napari_voxseg.core.features import feature_bank  # noqa: E402
from napari_voxseg.core.metrics import dice_per_class, multilabel_dice  # noqa: E402
from napari_voxseg.core.two_stage import fit_validated_stage1  # noqa: E402

STYLES = {"skeleton": skeleton_strokes, "lines": line_strokes}
METHODS = ("forest", "stage1", "unet", "two_stage")  # and "refined", on request


def _labels(probs: np.ndarray) -> np.ndarray:
    return (np.argmax(probs, axis=0) + 1).astype(np.uint8)


@contextmanager
def _network_always_kept(on: bool):
    """For ``refined``: the training loop believes the U-Net always beat stage 1 (it keeps its
    last weights; the judging still runs and is printed in the card)."""
    # Each module that asks holds its own name for it (the package's `train` shadows the
    # module of that name, hence sys.modules).
    askers = [sys.modules[f"napari_voxseg.core.{name}"] for name in ("train", "finish")]
    chosen = [module.network_chosen for module in askers]
    if on:
        for module in askers:
            module.network_chosen = lambda run: run.stage is not None
    try:
        yield
    finally:
        for module, original in zip(askers, chosen):
            module.network_chosen = original


def overlapping(labels: np.ndarray, k: int) -> np.ndarray:
    """Multi-label layers (L, Z, Y, X) of multi-class ``labels`` 0..K (0 stays 0: not
    annotated): one per class 2..K, and one for classes 2..K together when K >= 3; in each
    2 = present, 1 = absent."""
    groups = [[c] for c in range(2, k + 1)] + ([list(range(2, k + 1))] if k >= 3 else [])
    return np.stack([np.where(labels == 0, 0, np.where(np.isin(labels, g), 2, 1))
                     for g in groups]).astype(np.uint8)


def run_method(method: str, case, strokes: np.ndarray, k: int, seed: int,
               iterations: int, task: str = "multiclass") -> tuple[np.ndarray, float, str | None]:
    """The labels (Z, Y, X; multi-label (L, Z, Y, X) 1/2) a method predicts from the strokes,
    its seconds, and for the two stages which one the saved model kept ("network" or "stage
    1"; None when no strokes could be held out)."""
    began, kept = time.perf_counter(), None
    multilabel = task == "multilabel"
    if method == "forest":
        features = feature_bank(case.image, case.voxel_size)
        if multilabel:
            labels = np.stack([_labels(forest(features, layer, 2, torch.get_num_threads(),
                                              seed)[0]) for layer in strokes])
        else:
            labels = _labels(forest(features, strokes, k, torch.get_num_threads(), seed)[0])
    elif method == "stage1":  # as a two-stage run saves it: forest share chosen, all strokes
        model = fit_validated_stage1(case.image, strokes, k, case.voxel_size, seed=seed)
        probs = model.predict_proba(case.image)
        labels = (1 + (probs >= 0.5)).astype(np.uint8) if multilabel else _labels(probs)
    else:
        config = TrainConfig(iterations=iterations, seed=seed, task=task,
                             num_classes=len(strokes) if multilabel else k,
                             two_stage=False if method == "unet" else None)
        with _network_always_kept(method == "refined"):
            model = train(case.image, strokes, config, voxel_size=case.voxel_size).model
        labels = predict(model, case.image)
        kept = model.config["training"].get("validation", {}).get("kept")
    return labels, time.perf_counter() - began, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=None, help="comma-separated (default: tuning ones)")
    parser.add_argument("--held-out", action="store_true", help="run the held-out cases")
    parser.add_argument("--styles", default="skeleton,lines")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--task", default="multiclass", choices=("multiclass", "multilabel"))
    args = parser.parse_args()
    names = args.cases.split(",") if args.cases else case_names(args.held_out)
    rows = []
    for name in names:
        try:
            case = load_case(name)
        except ModuleNotFoundError as exc:
            print(f"# {name}: skipped ({exc})", flush=True)
            continue
        k = int(case.truth.max())
        for style in args.styles.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                strokes = STYLES[style](case.truth, seed=seed)
                truth = case.truth
                if args.task == "multilabel":
                    strokes, truth = overlapping(strokes, k), overlapping(case.truth, k)
                for method in args.methods.split(","):
                    labels, seconds, kept = run_method(method, case, strokes, k, seed,
                                                       args.iterations, args.task)
                    dice = (multilabel_dice(labels, truth) if args.task == "multilabel"
                            else dice_per_class(labels, truth))
                    row = {"case": name, "style": style, "seed": seed, "method": method,
                           "dice": {str(c): round(v, 4) for c, v in dice.items()},
                           "mean": round(float(np.mean(list(dice.values()))), 4),
                           "labeled": round(labeled_fraction(strokes), 5),
                           "seconds": round(seconds, 1), "kept": kept}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print("\n| case | style | " + " | ".join(args.methods.split(",")) + " |")
    print("| --- | --- |" + " --- |" * len(args.methods.split(",")))
    for name in names:
        for style in args.styles.split(","):
            means = [np.mean([r["mean"] for r in rows if (r["case"], r["style"], r["method"])
                              == (name, style, m)] or [np.nan])
                     for m in args.methods.split(",")]
            if not all(np.isnan(means)):
                print(f"| {name} | {style} | " + " | ".join(f"{m:.3f}" for m in means) + " |")


if __name__ == "__main__":
    main()
