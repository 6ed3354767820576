"""Dice against labeled fraction as strokes are added slice by slice: the random-forest
reference, stage 1 and the two-stage engine, drawn to a PNG.

    python benchmarks/scribble_curve.py [--cases a,b] [--style skeleton] [--slices 6]
                                        [--methods forest,stage1,two_stage] [--iterations 300]
                                        [--out docs/scribble_curve.png]

For each case, the strokes of benchmarks/scribbles.py are drawn on ``--slices`` evenly spaced
slices, one slice at a time; the methods are fitted on the strokes of the first 1, 2, ... of
those slices (in an order that spreads them over the volume) and scored on the whole volume.
Prints one JSON line per point and writes the plot (one panel per case; needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scribble_accuracy import STYLES, run_method  # noqa: E402
from scribbles import case_names, evenly_spaced, labeled_fraction, load_case  # noqa: E402

from napari_voxseg.core import TrainConfig  # noqa: E402
from napari_voxseg.core.metrics import dice_per_class  # noqa: E402

COLOURS = {"forest": "#888888", "stage1": "#1f77b4", "unet": "#ff7f0e", "two_stage": "#d62728"}


def spread(slices: list[int]) -> list[int]:
    """The slices in the order they are added: the middle first, then ever finer halves."""
    order, queue = [], [(0, len(slices))]
    while queue:
        low, high = queue.pop(0)
        if low >= high:
            continue
        mid = (low + high) // 2
        order.append(slices[mid])
        queue += [(low, mid), (mid + 1, high)]
    return order


def curve(name: str, style: str, slices: int, methods: list[str], iterations: int,
          seed: int) -> list[dict]:
    case = load_case(name)
    k = int(case.truth.max())
    order = spread(evenly_spaced(case.truth.shape[0], slices))
    points = []
    strokes = np.zeros(case.truth.shape, np.uint8)
    for n, z in enumerate(order, start=1):
        # Each slice's strokes drawn on their own (seeded by the slice): adding a slice keeps
        # the earlier strokes as they were.
        strokes = np.maximum(strokes, STYLES[style](case.truth, slices=[z], seed=seed + z))
        if len(np.unique(strokes[strokes > 0])) < 2:
            continue  # one slice may hold one class only: nothing to train on yet
        for method in methods:
            labels, seconds, kept = run_method(method, case, strokes, k, seed, iterations)
            dice = dice_per_class(labels, case.truth)
            point = {"case": name, "style": style, "slices": n, "method": method,
                     "labeled": round(labeled_fraction(strokes), 5),
                     "mean": round(float(np.mean(list(dice.values()))), 4),
                     "dice": {str(c): round(v, 4) for c, v in dice.items()},
                     "seconds": round(seconds, 1), "kept": kept}
            points.append(point)
            print(json.dumps(point), flush=True)
    return points


def plot(points: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(p["case"] for p in points))
    fig, axes = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 3.6), squeeze=False)
    for ax, name in zip(axes[0], cases):
        for method in dict.fromkeys(p["method"] for p in points):
            mine = [p for p in points if (p["case"], p["method"]) == (name, method)]
            ax.plot([100 * p["labeled"] for p in mine], [p["mean"] for p in mine], "o-",
                    color=COLOURS.get(method), label=method, markersize=4)
        ax.set_title(name)
        ax.set_xlabel("labeled voxels (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean Dice")
    axes[0][-1].legend(loc="lower right")
    save_figure(fig, out)


def save_figure(fig, out: Path) -> None:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"# wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=None, help="comma-separated (default: tuning ones)")
    parser.add_argument("--style", default="skeleton", choices=sorted(STYLES))
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--methods", default="forest,stage1,two_stage")
    parser.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/scribble_curve.png")
    args = parser.parse_args()
    names = args.cases.split(",") if args.cases else case_names()
    points = []
    for name in names:
        points += curve(name, args.style, args.slices, args.methods.split(","),
                        args.iterations, args.seed)
    plot(points, Path(args.out))


if __name__ == "__main__":
    main()
