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


def _read_image(path, channel_axis: int | None):
    """The image and its voxel size, channels first: as the file marks them, or moved from
    ``channel_axis`` (for files that do not say, e.g. a .npy saved as Z, Y, X, C)."""
    import numpy as np

    from .core import read_volume
    from .core.errors import VoxSegError

    image, voxel = read_volume(path)
    if channel_axis is not None:
        if image.ndim != 4 or not -4 <= channel_axis < 4:
            raise VoxSegError(f"--channel-axis {channel_axis}: {Path(path).name} has shape "
                              f"{image.shape}; give the axis (0 to 3) of a 4D image that "
                              "holds its channels")
        image = np.moveaxis(image, channel_axis, 0)
    return image, voxel


def _names(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [n.strip() for n in text.split(",")]


def cmd_train(args) -> int:
    from .core import TrainConfig, iter_train, load_model, read_volume, save_model
    from .core.checkpoint import check_model_folder
    from .core.errors import VoxSegError
    from .core.train import FINE_TUNE_LR_FACTOR

    inputs = [args.image, *args.labels, args.mask, args.boundary_from, args.init]
    # fail now, not after minutes of training
    out = check_model_folder(args.out, inputs=inputs, overwrite=args.overwrite)
    model = load_model(args.init, device=args.device) if args.init else None
    task, loss, learning_rate = args.task, args.loss, args.learning_rate
    if model is not None:  # fine-tune: the model's task and loss unless told otherwise
        task = task or model.config.get("task", "multiclass")
        loss = loss or model.config.get("loss", {}).get("name")
        learning_rate = learning_rate or TrainConfig.learning_rate * FINE_TUNE_LR_FACTOR
        if args.patch_size is None:
            args.patch_size = ",".join(str(v) for v in model.config["patch_size"])
    config = TrainConfig(
        iterations=args.iterations, task=task or "multiclass", loss=loss,
        class_weights=args.class_weights, num_classes=args.classes, device=args.device,
        seed=args.seed, num_threads=args.threads, focal_gamma=args.focal_gamma,
        precision=args.precision, network=args.network,
        boundary_weight=args.boundary_weight, boundary_sigma=args.boundary_sigma,
        class_names=_names(args.class_names),
        **({"patch_size": tuple(int(v) for v in _floats(args.patch_size, 3, "--patch-size"))}
           if args.patch_size else {}),
        **({"batch_size": args.batch_size} if args.batch_size else {}),
        **({"learning_rate": learning_rate} if learning_rate else {}),
    )
    config.checked()  # a bad task, loss or number: say so before reading any volume
    if len(args.labels) > 1 and config.task != "multilabel":
        raise VoxSegError(f"{len(args.labels)} label files given for a {config.task} task, which "
                          "takes one; give several only with --task multilabel (one per class)")
    if args.mask and config.task != "regression":
        raise VoxSegError("--mask is for regression targets; for a "
                          f"{config.task} task paint 0 where nothing is known")
    if args.boundary_from and config.loss != "boundary_ce":
        raise VoxSegError("--boundary-from is for --loss boundary_ce; drop it or use that loss")
    image, voxel = _read_image(args.image, args.channel_axis)
    volumes = [read_volume(path)[0] for path in args.labels]
    labels = volumes if config.task == "multilabel" and len(volumes) > 1 else volumes[0]
    if config.task == "multilabel" and config.class_names is None and len(volumes) > 1:
        config.class_names = [Path(p).name.split(".")[0] for p in args.labels]
    mask = read_volume(args.mask)[0] if args.mask else None
    reference = read_volume(args.boundary_from)[0] if args.boundary_from else None
    if args.voxel_size:
        voxel = _floats(args.voxel_size, 3, "--voxel-size")
    bar = Progress("train")
    gen = iter_train(image, labels, config, voxel_size=voxel, mask=mask,
                     boundary_reference=reference, model=model)
    try:
        while True:
            event = next(gen)
            bar.update(event.step, event.total, f"loss {event.smoothed_loss:.4f}")
    except StopIteration as stop:
        result = stop.value
    bar.close()
    for note in result.adjustments:
        print(f"note: {note}", file=sys.stderr)
    from .core.models import describe_network

    print(f"network: {describe_network(result.model.config)}; patch "
          f"{tuple(result.model.config['patch_size'])}")
    if result.warning:
        print(f"warning: {result.warning}; saving the best model so far (step "
              f"{result.best_step})", file=sys.stderr)
    save_model(result.model, out, overwrite=args.overwrite)
    print(f"saved model to {out} ({result.steps} steps, best smoothed loss "
          f"{result.best_loss:.4f} at step {result.best_step}, {result.elapsed:.0f} s)")
    return 0


def cmd_predict(args) -> int:
    from .core import VoxSegError, iter_predict, load_model, write_volume
    from .core.data import check_image
    from .core.outputs import check_outputs

    outputs = [args.out, args.probabilities, args.uncertainty]
    # before any work: no output over an input, over another output, or (without
    # --overwrite) over an existing file
    check_outputs([(p, None) for p in outputs], inputs=[args.model, args.image],
                  overwrite=args.overwrite)
    if any(Path(p).suffix.lower() == ".zarr" for p in filter(None, [args.image, *outputs])):
        return _predict_blocks(args)
    if args.scheduler:
        raise VoxSegError("--scheduler runs block-wise prediction, which reads and writes "
                          ".zarr; give a .zarr image or .zarr outputs")
    model = load_model(args.model, device=args.device)
    image, voxel = _read_image(args.image, args.channel_axis)
    if args.voxel_size:
        voxel = _floats(args.voxel_size, 3, "--voxel-size")
    image = check_image(image, channels=model.config["architecture"]["in_channels"])
    _warn_voxel_size(model, voxel, args.resample)  # only for an image the model can take
    bar = Progress("predict")
    gen = iter_predict(model, image, overlap=args.overlap, batch_size=args.batch_size,
                       precision=args.precision, voxel_size=voxel, resample=args.resample,
                       probabilities=bool(args.probabilities),
                       uncertainty=bool(args.uncertainty))
    try:
        while True:
            event = next(gen)
            bar.update(event.done, event.total)
    except StopIteration as stop:
        result = stop.value
    bar.close()
    voxel = voxel or (tuple(model.config["voxel_size"]) if model.config.get("voxel_size")
                      else None)
    write_volume(args.out, result.output, voxel, overwrite=args.overwrite)
    if args.probabilities:
        write_volume(args.probabilities, result.probabilities, voxel, overwrite=args.overwrite)
    if args.uncertainty:
        write_volume(args.uncertainty, result.uncertainty, voxel, overwrite=args.overwrite)
    _report(args.out, result, model)
    return 0


def _warn_voxel_size(model, voxel, resample: bool) -> None:
    from .core.infer import voxel_mismatch

    message = voxel_mismatch(model, voxel)
    if message and resample:
        print("note: the image's voxel size differs from the model's; predicting at the "
              "model's voxel size and resampling the results back (--resample)",
              file=sys.stderr)
    elif message:
        print(f"warning: {message} (add --resample)", file=sys.stderr)


def _predict_blocks(args) -> int:
    """Block-wise prediction: a .zarr image is read lazily, outputs go into .zarr stores."""
    from .core import VoxSegError, load_model
    from .core.blocks import iter_predict_blocks, open_zarr

    for target in filter(None, (args.out, args.probabilities, args.uncertainty)):
        if Path(target).suffix.lower() != ".zarr":
            raise VoxSegError(f"{Path(target).name}: with a .zarr image or output, every output "
                              "is a zarr store; name them *.zarr")
    model = load_model(args.model, device=args.device)
    if args.resample:
        raise VoxSegError("--resample works on volumes in memory, not block-wise (.zarr); "
                          "resample the volume first, or give a .tif/.npy/.nii.gz image and "
                          "outputs")
    if Path(args.image).suffix.lower() == ".zarr":
        image = open_zarr(args.image)
        voxel = image.attrs.get("voxel_size") if hasattr(image, "attrs") else None
        if args.channel_axis is not None:
            raise VoxSegError("--channel-axis is for files; a .zarr image gives its channels "
                              "first (C, Z, Y, X) or says where they are (OME-Zarr)")
    else:
        image, voxel = _read_image(args.image, args.channel_axis)
    if args.voxel_size:
        voxel = _floats(args.voxel_size, 3, "--voxel-size")
    _warn_voxel_size(model, voxel, False)
    voxel = voxel or model.config.get("voxel_size")
    block = tuple(int(v) for v in _floats(args.block, 3, "--block")) if args.block else None
    client = None
    if args.scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise VoxSegError("--scheduler needs dask.distributed: pip install "
                              "'napari-voxseg[cluster]'") from None
        try:
            client = Client(args.scheduler, timeout="20s")
        except OSError as exc:
            raise VoxSegError(f"cannot reach the dask scheduler at {args.scheduler} ({exc}); "
                              "check the address (tcp://host:8786)") from None
    bar = Progress("predict (blocks)")
    try:
        gen = iter_predict_blocks(model, image, args.out, probabilities=args.probabilities,
                                  uncertainty=args.uncertainty, block_shape=block,
                                  overlap=args.overlap, batch_size=args.batch_size,
                                  voxel_size=voxel, client=client, precision=args.precision,
                                  overwrite=args.overwrite)
        while True:
            event = next(gen)
            bar.update(event.done, event.total)
    except StopIteration as stop:
        written = stop.value
    finally:
        if client is not None:
            client.close()
    bar.close()
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def _report(out, result, model) -> None:
    import numpy as np

    if result.task == "regression":
        values = result.values
        print(f"wrote {out} (shape {values.shape}, values {values.min():.4g} to "
              f"{values.max():.4g})")
    elif result.task == "multilabel":
        names = [c.get("name", "?") for c in model.config["classes"]]
        share = ", ".join(f"{n} {100 * np.mean(v == 2):.1f}%" for n, v in zip(names,
                                                                              result.labels))
        print(f"wrote {out} (shape {result.labels.shape}, 1 = absent, 2 = present; "
              f"present: {share})")
    else:
        counts = {int(c): int(n) for c, n in zip(*np.unique(result.labels, return_counts=True))}
        print(f"wrote {out} (shape {result.labels.shape}, voxels per class {counts})")


def cmd_evaluate(args) -> int:
    from .core import dice_per_class, iou_per_class, read_volume
    from .core.metrics import multilabel_dice, regression_errors

    pred, _ = read_volume(args.prediction)
    truth, _ = read_volume(args.ground_truth)
    if truth.dtype.kind == "f":  # a float target: regression, values rather than labels
        mask = read_volume(args.mask)[0] if args.mask else None
        errors = regression_errors(pred, truth, mask)
        if args.json:
            print(json.dumps(errors))
        else:
            print(f"mean absolute error {errors['mae']:.6g}, root mean square error "
                  f"{errors['rmse']:.6g} over {errors['voxels']} voxels")
        return 0
    if pred.ndim == 4:  # multi-label: per class, 1 = absent, 2 = present
        dice = multilabel_dice(pred, truth)
        iou = {}
    else:
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
            print(f"{c:>6} {dice[c]:8.4f} {iou.get(c, math.nan):8.4f}")
        print(f"{'mean':>6} {mean:8.4f}")
    return 0


def cmd_demo(args) -> int:
    from ._qt.demo import run_demo

    return run_demo(headless=args.headless, out_dir=Path(args.out), iterations=args.iterations)


def build_parser() -> argparse.ArgumentParser:
    from .core import TrainConfig
    from .core.device import DEVICES, PRECISIONS
    from .core.losses import TASKS, losses_for
    from .core.train import FINE_TUNE_LR_FACTOR, NETWORKS

    parser = _Parser(prog="python -m napari_voxseg",
                     description="Train, apply and score 3D segmentation networks from strokes.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    names = sorted({n for t in TASKS for n in losses_for(t)})
    p = sub.add_parser("train", help="train a network on an image and its strokes")
    p.add_argument("image", help="volume (.tif, .tiff, .npy, .npz)")
    p.add_argument("labels", nargs="+",
                   help="multiclass: strokes, 0 = not annotated, 1..K = classes; multilabel: one "
                        "file per class (or one (K,Z,Y,X) file), 0 = not annotated, 1 = absent, "
                        "2 = present; regression: the float target")
    p.add_argument("--out", required=True,
                   help="model folder to write: a new name or an empty folder (an earlier "
                        "voxseg model only with --overwrite; any other folder is refused)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier model folder that voxseg wrote")
    p.add_argument("--task", default=None, choices=TASKS,
                   help="default multiclass (with --init: the model's task)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="fine-tune this saved model on the strokes instead of training a new "
                        "one (default learning rate then "
                        f"{TrainConfig.learning_rate * FINE_TUNE_LR_FACTOR:g})")
    p.add_argument("--loss", default=None, choices=names, metavar="LOSS",
                   help="multiclass: " + ", ".join(losses_for("multiclass"))
                        + " (default ce); multilabel: " + ", ".join(losses_for("multilabel"))
                        + " (default bce); regression: " + ", ".join(losses_for("regression"))
                        + " (default mse)")
    p.add_argument("--class-weights", default="none",
                   help="none | auto (inverse stroke frequency; multilabel: absent/present) | "
                        "median (median-frequency balancing) | w1,w2,... (one per class)")
    p.add_argument("--focal-gamma", type=float, default=TrainConfig.focal_gamma,
                   help="focal loss: how much easy voxels are down-weighted (0 = cross-entropy)")
    p.add_argument("--boundary-weight", type=float, default=TrainConfig.boundary_weight,
                   help="boundary_ce: extra weight at a class boundary (w0)")
    p.add_argument("--boundary-sigma", type=float, default=TrainConfig.boundary_sigma,
                   help="boundary_ce: fall-off of the extra weight, in voxels")
    p.add_argument("--boundary-from", default=None, metavar="LABELS",
                   help="boundary_ce: find boundaries in these labels (e.g. a prediction) "
                        "instead of the strokes")
    p.add_argument("--mask", default=None,
                   help="regression: where the target is known (nonzero); default everywhere")
    p.add_argument("--classes", type=int, default=None,
                   help="class count K (default: the largest class painted)")
    p.add_argument("--class-names", default=None,
                   help="name1,name2,... (multilabel default: the label files' names)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--network", default="auto", choices=NETWORKS,
                   help="auto: a 2D U-Net applied slice by slice for stacks with fewer slices "
                        "than a 3D patch, else a 3D U-Net whose pooling follows the voxel size; "
                        "or 3d / 2d")
    p.add_argument("--patch-size", default=None,
                   help="Z,Y,X (default: 32,48,48 for isotropic voxels, flatter and wider for "
                        "anisotropic ones, 1,48,48 for 2D)")
    p.add_argument("--batch-size", type=int, default=None, help="default 2 (3D) or 8 (2D)")
    p.add_argument("--channel-axis", type=int, default=None,
                   help="the image's channel axis, for 4D files that do not say (e.g. 3 for "
                        "a .npy saved as Z,Y,X,C); .tif/OME-TIFF/OME-Zarr channels are found")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: float16 on CUDA, bfloat16 on CPUs with AMX/AVX512-BF16, else "
                        "float32")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--voxel-size", default=None, help="Z,Y,X (default: from the image file)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="label a volume with a saved model")
    p.add_argument("model", help="model folder")
    p.add_argument("image", help="volume (.tif, .tiff, .npy, .npz)")
    p.add_argument("--out", required=True, help="labels file to write (1..K)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (never an input; a .zarr folder only "
                        "if voxseg wrote it)")
    p.add_argument("--probabilities", default=None, help="also write (K, Z, Y, X) probabilities")
    p.add_argument("--uncertainty", default=None,
                   help="also write (Z, Y, X) uncertainty: the entropy of the probabilities, "
                        "0 (sure) to 1")
    p.add_argument("--overlap", type=float, default=0.25,
                   help="how much neighbouring tiles overlap, 0 to <1 (default 0.25)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: float16 on CUDA, bfloat16 on CPUs with AMX/AVX512-BF16, else "
                        "float32")
    p.add_argument("--block", default=None,
                   help="Z,Y,X block size for block-wise prediction (.zarr in or out; default "
                        "about 16M voxels)")
    p.add_argument("--channel-axis", type=int, default=None,
                   help="the image's channel axis, for 4D files that do not say")
    p.add_argument("--voxel-size", default=None, help="Z,Y,X (default: from the image file)")
    p.add_argument("--resample", action="store_true",
                   help="when the image's voxel size differs from the model's, predict at the "
                        "model's voxel size and resample the results back")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the blocks on a dask.distributed cluster (tcp://host:8786)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="Dice and IoU per class against a ground truth (for "
                                        "regression: mean absolute and RMS error)")
    p.add_argument("prediction")
    p.add_argument("ground_truth")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--mask", default=None, help="regression: compare only where nonzero")
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
