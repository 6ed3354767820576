"""Does "where to paint next" find the slices worth painting? Strokes are added one slice at a
time, the slice chosen (a) by voxseg's suggestion, (b) evenly (each new slice the farthest
from those painted), (c) at random (three seeds); Dice after each round, and how many painted
slices each way needs to reach a given Dice.

    python benchmarks/active_learning.py [--cases a,b] [--held-out] [--rounds 5]
                                         [--engine stage1|two_stage] [--iterations 300]
                                         [--out docs/active_learning.png]

Each case starts from the seeded skeleton strokes (benchmarks/scribbles.py) of its middle slice;
every round adds the strokes of one more Z slice (each slice's strokes drawn on their own,
seeded by the slice, so a slice gets the same strokes whoever chose it). The model after each
round is the engine fitted on the strokes so far (``stage1``: the instant classifier on all
strokes, its forest and MLP mixed as by default, seconds a round; ``two_stage``: the whole
engine, minutes a round), scored on the whole volume (mean Dice
over classes). The suggestion ranks the slices with :func:`napari_voxseg.core.suggest.
rank_slices` from that model's probabilities (and stage 1's, for the two stages) and the
painted slices, as ``voxseg suggest`` does.

"Slices to reach" a case's target (the median over the strategies of their final Dice, less
0.005): the fewest painted slices after which the Dice stays at least the target; random's is
the mean over its seeds. "Area": the mean Dice over the rounds after the first. Prints one JSON
line per round and strategy, a summary table, and writes the plot (needs matplotlib);
``--from-log`` summarizes and plots an earlier run's output again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scribble_curve import save_figure  # noqa: E402
from scribbles import HELD_OUT, case_names, load_case, skeleton_strokes  # noqa: E402

from napari_voxseg.core.infer import iter_predict, run_to_end  # noqa: E402
from napari_voxseg.core.metrics import dice_per_class  # noqa: E402
from napari_voxseg.core.stage1 import fit_stage1  # noqa: E402
from napari_voxseg.core.suggest import disagreement, entropy, rank_slices  # noqa: E402
from napari_voxseg.core.train import TrainConfig, train  # noqa: E402

STRATEGIES = ("suggest", "evenly", "random0", "random1", "random2")
COLOURS = {"suggest": "#d62728", "evenly": "#1f77b4", "random": "#888888"}


def slice_strokes(truth: np.ndarray, z: int, seed: int) -> np.ndarray:
    return skeleton_strokes(truth, slices=[z], seed=seed + z)


def fit_predict(engine: str, case, strokes: np.ndarray, k: int, iterations: int, seed: int):
    """(probabilities (K, Z, Y, X), stage 1's probabilities or None)."""
    if engine == "stage1":  # the instant classifier on all strokes (its default mix)
        model = fit_stage1(case.image, strokes, case.voxel_size, seed=seed, num_classes=k,
                           threads=None)
        return model.predict_proba(case.image, threads=None), None
    config = TrainConfig(iterations=iterations, seed=seed, num_classes=k)
    model = train(case.image, strokes, config, voxel_size=case.voxel_size).model
    result = run_to_end(iter_predict(model, case.image, probabilities=True))
    first = model.stage1.predict_proba(case.image) if model.stage1 is not None else None
    return result.probabilities, first


def next_slice(strategy: str, painted: list[int], n: int, probs, first, rng) -> int:
    free = [z for z in range(n) if z not in painted]
    if strategy == "suggest":
        u = entropy(probs)
        d = None if first is None else disagreement(first, probs)
        return rank_slices(u, d, painted=painted, top=1)[0].slice
    if strategy == "evenly":  # the farthest from every painted slice (ties: the lowest)
        return max(free, key=lambda z: (min(abs(z - p) for p in painted), -z))
    return int(rng.choice(free))


def run_case(name: str, rounds: int, engine: str, iterations: int, seed: int) -> list[dict]:
    case = load_case(name)
    truth, k = case.truth, int(case.truth.max())
    n = truth.shape[0]
    points = []
    if n < 2 * (rounds + 1):
        print(f"# {name}: {n} slices, too few to choose {rounds} more from; skipped")
        return []
    for strategy in STRATEGIES:
        rng = np.random.default_rng(int(strategy[-1]) if strategy.startswith("random") else 0)
        painted = [n // 2]
        strokes = slice_strokes(truth, n // 2, seed)
        if len(np.unique(strokes[strokes > 0])) < 2:
            print(f"# {name}: the middle slice has strokes of one class only; skipped")
            return []
        for round_ in range(rounds + 1):
            began = time.perf_counter()
            probs, first = fit_predict(engine, case, strokes, k, iterations, seed)
            dice = dice_per_class((np.argmax(probs, axis=0) + 1).astype(np.uint8), truth)
            point = {"case": name, "strategy": strategy, "round": round_,
                     "slices": list(painted), "mean": round(float(np.mean(list(dice.values()))), 4),
                     "seconds": round(time.perf_counter() - began, 1)}
            points.append(point)
            print(json.dumps(point), flush=True)
            if round_ == rounds:
                break
            z = next_slice(strategy, painted, n, probs, first, rng)
            painted.append(z)
            strokes = np.maximum(strokes, slice_strokes(truth, z, seed))
    return points


def slices_to_reach(curve: list[float], target: float) -> int | None:
    """Painted slices (1 + round) after which the Dice stays at least ``target``."""
    for i in range(len(curve)):
        if all(v >= target for v in curve[i:]):
            return i + 1
    return None


def summarize(points: list[dict]) -> list[dict]:
    """Per case: the mean Dice over the rounds after the first (the area under the curve), and
    the painted slices each strategy needs to reach and keep the target: the median over the
    strategies of their final Dice (a level most reach), less 0.005."""
    rows = []
    for name in dict.fromkeys(p["case"] for p in points):
        curves = {s: [p["mean"] for p in points if (p["case"], p["strategy"]) == (name, s)]
                  for s in STRATEGIES}
        target = float(np.median([c[-1] for c in curves.values()])) - 0.005
        reach = {s: slices_to_reach(c, target) for s, c in curves.items()}
        randoms = [s for s in STRATEGIES if s.startswith("random")]
        random_reach = [reach[s] for s in randoms]
        area = {s: float(np.mean(c[1:])) for s, c in curves.items()}
        rows.append({
            "case": name, "target": round(target, 4), "suggest": reach["suggest"],
            "evenly": reach["evenly"],
            "random": None if None in random_reach else round(float(np.mean(random_reach)), 2),
            "random_missed": sum(r is None for r in random_reach),
            "area": {"suggest": round(area["suggest"], 4), "evenly": round(area["evenly"], 4),
                     "random": round(float(np.mean([area[s] for s in randoms])), 4)},
            "final": {s: c[-1] for s, c in curves.items()}})
    return rows


def report(rows: list[dict], engine: str) -> None:
    print(f"# {engine}: painted slices to reach and keep the target Dice (fewer is better; "
          "'-' never), and the mean Dice over rounds 1..N (higher is better)")
    print(f"# {'case':<18} {'target':>6} {'suggest':>7} {'evenly':>6} {'random':>6}   "
          f"{'area: suggest':>13} {'evenly':>6} {'random':>6}")
    for r in rows:
        a = r["area"]
        print(f"# {r['case']:<18} {r['target']:>6.3f} {r['suggest'] or '-':>7} "
              f"{r['evenly'] or '-':>6} {r['random'] or '-':>6}   {a['suggest']:>13.4f} "
              f"{a['evenly']:>6.4f} {a['random']:>6.4f}")
        print(json.dumps({"summary": r}))


def plot(points: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(p["case"] for p in points))
    columns = min(3, len(cases))
    rows = -(-len(cases) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.8 * columns, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(cases):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, cases):
        for strategy in STRATEGIES:
            mine = [p for p in points if (p["case"], p["strategy"]) == (name, strategy)]
            kind = "random" if strategy.startswith("random") else strategy
            ax.plot([len(p["slices"]) for p in mine], [p["mean"] for p in mine],
                    "o-" if kind != "random" else ".--", color=COLOURS[kind], markersize=4,
                    label=kind if strategy in ("suggest", "evenly", "random0") else None,
                    alpha=1 if kind != "random" else 0.6)
        ax.set_title(name + (" (held out)" if name in HELD_OUT else ""), fontsize=9)
        ax.set_xlabel("painted slices", fontsize=8)
        ax.set_ylabel("mean Dice", fontsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(loc="lower right", fontsize=8)
    save_figure(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=None, help="comma-separated (default: tuning ones)")
    parser.add_argument("--held-out", action="store_true", help="the held-out cases")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engine", default="stage1", choices=("stage1", "two_stage"))
    parser.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/active_learning.png")
    parser.add_argument("--from-log", default=None, metavar="FILE",
                        help="summarize and plot the JSON lines an earlier run printed")
    args = parser.parse_args()
    if args.from_log:
        points = [json.loads(line) for line in Path(args.from_log).read_text().splitlines()
                  if line.startswith('{"case"')]
    else:
        names = args.cases.split(",") if args.cases else case_names(args.held_out)
        points = []
        for name in names:
            points += run_case(name, args.rounds, args.engine, args.iterations, args.seed)
    report(summarize(points), args.engine)
    plot(points, Path(args.out))


if __name__ == "__main__":
    main()
