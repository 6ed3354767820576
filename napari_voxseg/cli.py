"""``python -m napari_voxseg train | predict | evaluate | demo`` (see DESIGN.md).

Bad input ends with one line on stderr (``error: ...``) and exit code 2; no traceback and no
output file is left behind.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other bad input."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see '{self.prog} --help')\n")


class Progress:
    """A text progress bar on stderr: redrawn in place on a terminal, every 10% otherwise."""

    def __init__(self, label: str, stream=None, width: int = 30):
        self.label, self.stream, self.width = label, stream or sys.stderr, width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1
        self._start = time.perf_counter()

    def update(self, done: int, total: int, extra: str = "") -> None:
        frac = done / total if total else 1.0
        decile = int(frac * 10)
        if not self.tty and decile == self._last_decile and done != total:
            return
        self._last_decile = decile
        filled = int(frac * self.width)
        elapsed = time.perf_counter() - self._start
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
                f"{elapsed:5.0f}s {extra}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _floats(text: str, count: int, what: str) -> tuple[float, ...]:
    from .core import VoxSegError

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise VoxSegError(f"{what} {text!r} is not {count} comma-separated numbers") from None
    if len(values) != count or not all(math.isfinite(v) and v > 0 for v in values):
        raise VoxSegError(f"{what} {text!r} must be {count} positive numbers, e.g. "
                          f"{','.join(['1'] * count)}")
    return values


def cmd_train(args) -> int:
    from .core import TrainConfig, iter_train, read_volume, save_model
    from .core.checkpoint import check_model_folder

    out = check_model_folder(args.out)  # fail now, not after minutes of training
    image, voxel = read_volume(args.image)
    labels, _ = read_volume(args.labels)
    if args.voxel_size:
        voxel = _floats(args.voxel_size, 3, "--voxel-size")
    config = TrainConfig(
        iterations=args.iterations, loss=args.loss, class_weights=args.class_weights,
        num_classes=args.classes, device=args.device, seed=args.seed,
        num_threads=args.threads,
        **({"patch_size": tuple(int(v) for v in _floats(args.patch_size, 3, "--patch-size"))}
           if args.patch_size else {}),
        **({"batch_size": args.batch_size} if args.batch_size else {}),
        **({"learning_rate": args.learning_rate} if args.learning_rate else {}),
    )
    bar = Progress("train")
    gen = iter_train(image, labels, config, voxel_size=voxel)
    try:
        while True:
            event = next(gen)
            bar.update(event.step, event.total, f"loss {event.smoothed_loss:.4f}")
    except StopIteration as stop:
        result = stop.value
    bar.close()
    save_model(result.model, out)
    print(f"saved model to {out} ({result.steps} steps, best smoothed loss "
          f"{result.best_loss:.4f} at step {result.best_step}, {result.elapsed:.0f} s)")
    return 0


def cmd_predict(args) -> int:
    import numpy as np

    from .core import iter_predict, load_model, read_volume, write_volume
    from .core.files import check_output_file

    for target in filter(None, (args.out, args.probabilities)):
        check_output_file(target)  # fail now, not after the prediction
    model = load_model(args.model, device=args.device)
    image, voxel = read_volume(args.image)
    bar = Progress("predict")
    gen = iter_predict(model, image, overlap=args.overlap,
                       probabilities=bool(args.probabilities))
    try:
        while True:
            event = next(gen)
            bar.update(event.done, event.total)
    except StopIteration as stop:
        result = stop.value
    bar.close()
    voxel = voxel or (tuple(model.config["voxel_size"]) if model.config.get("voxel_size")
                      else None)
    write_volume(args.out, result.labels, voxel)
    if args.probabilities:
        write_volume(args.probabilities, result.probabilities, voxel)
    counts = {int(c): int(n) for c, n in zip(*np.unique(result.labels, return_counts=True))}
    print(f"wrote {args.out} (shape {result.labels.shape}, voxels per class {counts})")
    return 0


def cmd_evaluate(args) -> int:
    from .core import dice_per_class, iou_per_class, read_volume

    pred, _ = read_volume(args.prediction)
    truth, _ = read_volume(args.ground_truth)
    dice = dice_per_class(pred, truth)
    iou = iou_per_class(pred, truth)

    def clean(v):
        return None if math.isnan(v) else round(v, 6)

    finite = [v for v in dice.values() if not math.isnan(v)]
    mean = sum(finite) / len(finite) if finite else float("nan")
    if args.json:
        print(json.dumps({"dice": {str(c): clean(v) for c, v in dice.items()},
                          "iou": {str(c): clean(v) for c, v in iou.items()},
                          "mean_dice": clean(mean)}))
    else:
        print(f"{'class':>6} {'dice':>8} {'iou':>8}")
        for c in dice:
            print(f"{c:>6} {dice[c]:8.4f} {iou[c]:8.4f}")
        print(f"{'mean':>6} {mean:8.4f}")
    return 0


def cmd_demo(args) -> int:
    from ._qt.demo import run_demo

    return run_demo(headless=args.headless, out_dir=Path(args.out), iterations=args.iterations)


def build_parser() -> argparse.ArgumentParser:
    from .core.device import DEVICES
    from .core.losses import LOSSES

    parser = _Parser(prog="python -m napari_voxseg",
                     description="Train, apply and score 3D segmentation networks from strokes.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a network on an image and its strokes")
    p.add_argument("image", help="volume (.tif, .tiff, .npy, .npz)")
    p.add_argument("labels", help="strokes: 0 = not annotated, 1..K = classes")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--loss", default="ce", choices=sorted(LOSSES))
    p.add_argument("--class-weights", default="none",
                   help="none | auto (inverse stroke frequency) | w1,w2,... (one per class)")
    p.add_argument("--classes", type=int, default=None,
                   help="class count K (default: the largest class painted)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--patch-size", default=None, help="Z,Y,X (default 32,48,48)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--voxel-size", default=None, help="Z,Y,X (default: from the image file)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="label a volume with a saved model")
    p.add_argument("model", help="model folder")
    p.add_argument("image", help="volume (.tif, .tiff, .npy, .npz)")
    p.add_argument("--out", required=True, help="labels file to write (1..K)")
    p.add_argument("--probabilities", default=None, help="also write (K, Z, Y, X) probabilities")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="Dice and IoU per class against a ground truth")
    p.add_argument("prediction")
    p.add_argument("ground_truth")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="open napari with the sample and the widget (headless: "
                                    "train, predict, write the prediction and a screenshot)")
    p.add_argument("--headless", action="store_true")
    p.add_argument("--out", default="voxseg-demo", help="folder for the headless outputs")
    p.add_argument("--iterations", type=int, default=None)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .core.errors import VoxSegError

    try:
        return args.func(args)
    except VoxSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
