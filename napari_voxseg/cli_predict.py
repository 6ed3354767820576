"""``python -m napari_voxseg predict``: one image (``--out FILE``) or many (``--out-dir DIR``,
images listed or ``--dataset DIR``), the model loaded once.

Many images: one line per file with its time, files whose outputs exist skipped unless
``--overwrite``, a file that fails reported without stopping the others, a summary at the end,
exit 1 when any failed. Everything that can be checked without reading the images (the model,
every output's place) is checked before the first one is predicted (exit 2).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .cli_common import log, note

EXIT_SOME_FAILED = 1


@dataclass
class Outputs:
    """Where one image's results go (None: not written)."""

    out: Path
    probabilities: Path | None = None
    uncertainty: Path | None = None
    extra: dict = field(default_factory=dict)  # e.g. instances

    def paths(self) -> list[Path]:
        return [p for p in (self.out, self.probabilities, self.uncertainty,
                            *self.extra.values()) if p is not None]


def cmd_predict(args) -> int:
    from .core import VoxSegError

    images = [Path(p) for p in args.images]
    if args.dataset:
        from .core.datasets import dataset_images

        if images:
            raise VoxSegError("give images or --dataset, not both")
        images = dataset_images(args.dataset)
    if not images:
        raise VoxSegError("no image given; name one or more images, or --dataset DIR")
    if (args.out is None) == (args.out_dir is None):
        raise VoxSegError("give --out FILE for one image or --out-dir DIR for several"
                          if args.out is None else "give --out or --out-dir, not both")
    if args.out is not None:
        if len(images) > 1 or args.dataset:
            raise VoxSegError(f"--out names one file but {len(images)} images are given; use "
                              "--out-dir DIR for several")
        return _predict_one(args, images[0])
    return _predict_many(args, images)


def _check_single(args, image: Path, outputs: Outputs):
    from .core.outputs import check_outputs

    # before any work: no output over an input, over another output, or (without
    # --overwrite) over an existing file
    check_outputs([(p, None) for p in outputs.paths()], inputs=[args.model, image],
                  overwrite=args.overwrite)


def _predict_one(args, image: Path) -> int:
    outputs = _with_objects(args, Outputs(Path(args.out), _path(args.probabilities),
                                          _path(args.uncertainty)))
    _check_single(args, image, outputs)
    blockwise = _blockwise(image, outputs)
    if not blockwise and args.scheduler:
        from .core import VoxSegError

        raise VoxSegError("--scheduler runs block-wise prediction, which reads and writes "
                          ".zarr; give a .zarr image or .zarr outputs")
    model = _load(args)
    summary = predict_file(args, model, image, outputs, bar=True)
    log.info(f"wrote {summary}")
    return 0


def _load(args):
    """The model, and the classes --instances names checked against it (before any work)."""
    from .core import load_model
    from .core.objects import object_classes

    model = load_model(args.model, device=args.device)
    log.debug(f"model {args.model}: {model.config.get('task', 'multiclass')}, device "
              f"{next(model.parameters()).device}, "
              f"{model.config['architecture'].get('name', 'unet')}")
    args.object_classes = (object_classes(args.instances, model.config) if args.instances
                           else None)
    return model


def _with_objects(args, outputs: Outputs) -> Outputs:
    if args.instances:
        from .core.objects import objects_path

        outputs.extra["objects"] = objects_path(outputs.out)
    return outputs


def _path(text) -> Path | None:
    return Path(text) if text else None


def _blockwise(image: Path, outputs: Outputs) -> bool:
    return any(p.suffix.lower() == ".zarr" for p in (image, *outputs.paths()))


def planned_outputs(args, images: list[Path]) -> list[Outputs]:
    """Each image's outputs in ``--out-dir``: the image's name, in ``--out-format`` when given
    (default: the image's own format)."""
    from .core import VoxSegError
    from .core.paths import stem_of, suffix_of

    if args.probabilities or args.uncertainty:
        raise VoxSegError("--probabilities and --uncertainty name one file each; with "
                          "--out-dir predict labels only, or run one image at a time")
    folder = Path(args.out_dir)
    if folder.exists() and not folder.is_dir():
        raise VoxSegError(f"--out-dir {folder} is a file; give a folder (it is created if "
                          "missing)")
    fmt = args.out_format
    if fmt:
        fmt = fmt if fmt.startswith(".") else "." + fmt
    return [_with_objects(args, Outputs(folder / f"{stem_of(image)}{fmt or suffix_of(image)}"))
            for image in images]


def _predict_many(args, images: list[Path]) -> int:
    from .core.outputs import check_outputs

    plans = planned_outputs(args, images)
    # outputs already there: all of them, the image is done; some, an earlier run stopped
    # (told per file); none, or --overwrite: to predict
    found = [[q for q in p.paths() if q.exists()] for p in plans]
    todo = [args.overwrite or not there for there in found]
    # Before any work: every output has a sound place, none is an input or another output.
    with _out_dir(Path(args.out_dir)):
        inputs = [args.model, *images]
        # none is an input, even one skipped as done; then those to write, as asked
        check_outputs([(q, None) for p in plans for q in p.paths()], inputs=inputs,
                      overwrite=True)
        check_outputs([(q, None) for p, go in zip(plans, todo) if go for q in p.paths()],
                      inputs=inputs, overwrite=args.overwrite)
        model = _load(args)
    began, done, skipped, failed = time.perf_counter(), 0, 0, []
    n = len(images)
    for k, (image, plan, there, go) in enumerate(zip(images, plans, found, todo), start=1):
        head = f"[{k}/{n}] {image.name}"
        if not go and len(there) == len(plan.paths()):
            skipped += 1
            log.info(f"{head}: skipped, {plan.out} exists (--overwrite to predict it again)")
            continue
        if not go:
            missing = [q.name for q in plan.paths() if q not in there]
            failed.append(image.name)
            log.warning(f"{head}: failed: {there[0].name} exists but {', '.join(missing)} does "
                        "not (an earlier run stopped); delete it or add --overwrite")
            continue
        start = time.perf_counter()
        try:
            summary = predict_file(args, model, image, plan, bar=False)
        except KeyboardInterrupt:
            log.warning(f"{head}: interrupted; predicted {done} of {n} before it, written in "
                        f"{args.out_dir}")
            return 130
        except Exception as exc:  # one bad file never stops the others
            failed.append(image.name)
            log.warning(f"{head}: failed: {_reason(exc)}")
            continue
        done += 1
        log.info(f"{head} -> {summary}  {time.perf_counter() - start:.1f} s")
    total = time.perf_counter() - began
    line = (f"predicted {done}, skipped {skipped}, failed {len(failed)} of {n} images in "
            f"{total:.1f} s")
    (log.warning if failed else log.info)(line + (f"; failed: {', '.join(failed)}" if failed
                                                  else ""))
    return EXIT_SOME_FAILED if failed else 0


@contextmanager
def _out_dir(folder: Path):
    """Create ``folder`` (its parent must exist) for the checks before any work; a check that
    fails removes it again when it was made here."""
    from .core import VoxSegError

    if not folder.parent.is_dir():
        raise VoxSegError(f"--out-dir {folder}: folder {folder.parent} does not exist; create "
                          "it or choose another place")
    made = not folder.exists()
    if made:
        folder.mkdir()
    try:
        yield
    except BaseException:
        if made:
            folder.rmdir()
        raise


def _reason(exc: BaseException) -> str:
    from .core import VoxSegError

    if isinstance(exc, VoxSegError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory; predict it block-wise (a .zarr image or --out-format zarr)"
    return f"{type(exc).__name__}: {exc}"


def predict_file(args, model, image: Path, outputs: Outputs, *, bar: bool) -> str:
    """Predict ``image`` with ``model`` into ``outputs``; a one-line summary of what was
    written."""
    if _blockwise(image, outputs):
        return _predict_blocks(args, model, image, outputs, bar)
    from .cli_common import Progress, _floats, _move_channels
    from .core import iter_predict, run_to_end, write_volume
    from .core.card import image_channels
    from .core.data import check_image
    from .core.paths import suffix_of
    from .core.series import iter_predict_series, read_series

    array, voxel, series = read_series(image, args.time_axis, args.channel_axis)
    if args.voxel_size:
        voxel = _floats(args.voxel_size, 3, "--voxel-size")
    channels = image_channels(model.config)
    if series:  # frame by frame
        check_image(array[0], channels=channels)
        label = f"predict {len(array)} frames"
        run = iter_predict_series
    else:
        array = check_image(_move_channels(array, args.channel_axis, image), channels=channels)
        label, run = "predict", iter_predict
    _warn_voxel_size(model, voxel, args.resample)  # only for an image the model can take
    progress = Progress(label) if bar else None

    def show(e):
        done = (e.frame * e.total + e.done, e.frames * e.total) if series else (e.done, e.total)
        progress.update(*done)

    result = run_to_end(run(model, array, overlap=args.overlap, batch_size=args.batch_size,
                            precision=args.precision, voxel_size=voxel, resample=args.resample,
                            probabilities=outputs.probabilities is not None,
                            uncertainty=outputs.uncertainty is not None),
                        show if progress else None)
    if progress:
        progress.close()
    voxel = voxel or (tuple(model.config["voxel_size"]) if model.config.get("voxel_size")
                      else None)
    objects = None
    if "objects" in outputs.extra:  # made before anything is written: all or nothing
        from .core.objects import make_objects

        objects = make_objects(result.output, args.object_classes, voxel_size=voxel,
                               num_classes=_num_classes(model), time=series)
    for path, values in ((outputs.out, result.output), (outputs.probabilities,
                         result.probabilities), (outputs.uncertainty, result.uncertainty),
                         (outputs.extra.get("objects"), objects)):
        if path:  # a NIfTI output from a NIfTI scan takes the scan's affine and orientation
            write_volume(path, values, voxel, overwrite=args.overwrite, time=series,
                         like=image if suffix_of(image) in (".nii", ".nii.gz") else None)
    described = f"{outputs.out} ({_describe(result, model)})"
    if objects is None:
        return described
    from .core.objects import object_count

    return described + f"; {object_count(objects, series)} objects" \
        f"{' in the last frame' if series else ''} in {outputs.extra['objects']}"


def _objects(args, model, labels, outputs: Outputs, voxel) -> str:
    """Write the objects asked for (--instances) of a zarr prediction; for the summary."""
    if "objects" not in outputs.extra:
        return ""
    from .core.objects import write_objects

    count = write_objects(labels, outputs.extra["objects"], args.object_classes,
                          voxel_size=voxel, num_classes=_num_classes(model),
                          overwrite=args.overwrite)
    return f"; {count} objects in {outputs.extra['objects']}"


def _num_classes(model) -> int:
    return int(model.config["architecture"]["num_classes"])


def _warn_voxel_size(model, voxel, resample: bool) -> None:
    from .core.infer import voxel_mismatch

    message = voxel_mismatch(model, voxel)
    if message and resample:
        note("note: the image's voxel size differs from the model's; predicting at the "
             "model's voxel size and resampling the results back (--resample)")
    elif message:
        print(f"warning: {message} (add --resample)", file=sys.stderr)


def _predict_blocks(args, model, image: Path, outputs: Outputs, bar: bool) -> str:
    """Block-wise prediction: a .zarr image is read lazily, outputs go into .zarr stores."""
    from .cli_common import Progress, _floats
    from .core import VoxSegError, run_to_end
    from .core.blocks import iter_predict_blocks, open_zarr_levels

    for target in outputs.paths():
        if target.suffix.lower() != ".zarr":
            raise VoxSegError(f"{target.name}: with a .zarr image or output, every output "
                              "is a zarr store; name them *.zarr")
    if args.resample:
        raise VoxSegError("--resample works on volumes in memory, not block-wise (.zarr); "
                          "resample the volume first, or give a .tif/.npy/.nii.gz image and "
                          "outputs")
    series = ("time series are written to files (.tif, .npy, .nii.gz), not .zarr stores; "
              "name the outputs otherwise")
    if args.time_axis is not None:
        raise VoxSegError(f"--time-axis: {series}")
    if image.suffix.lower() == ".zarr":
        levels, info = open_zarr_levels(image)  # plain, voxseg's or any OME-Zarr store
        source, voxel = levels[0], info.get("voxel_size")
        if args.channel_axis is not None:
            raise VoxSegError("--channel-axis is for files; a .zarr image gives its channels "
                              "first (C, Z, Y, X) or says where they are (OME-Zarr)")
    else:
        from .cli_common import _move_channels
        from .core.series import read_series

        source, voxel, is_series = read_series(image, None, args.channel_axis)
        if is_series:
            raise VoxSegError(f"{image.name} is a time series; {series}")
        source = _move_channels(source, args.channel_axis, image)
    if args.voxel_size:
        voxel = _floats(args.voxel_size, 3, "--voxel-size")
    _warn_voxel_size(model, voxel, False)
    voxel = voxel or model.config.get("voxel_size")
    block = tuple(int(v) for v in _floats(args.block, 3, "--block")) if args.block else None
    client = _client(args.scheduler)
    progress = Progress("predict (blocks)") if bar else None
    try:
        written = run_to_end(
            iter_predict_blocks(model, source, outputs.out, probabilities=outputs.probabilities,
                                uncertainty=outputs.uncertainty, block_shape=block,
                                overlap=args.overlap, batch_size=args.batch_size,
                                voxel_size=voxel, client=client, precision=args.precision,
                                overwrite=args.overwrite),
            (lambda e: progress.update(e.done, e.total)) if progress else None)
    finally:
        if client is not None:
            client.close()
    if progress:
        progress.close()
    objects = _objects(args, model, str(outputs.out), outputs, voxel)
    return ", ".join(str(p) for p in written.values()) + objects


def _client(address):
    if not address:
        return None
    from .core import VoxSegError

    try:
        from distributed import Client
    except ImportError:
        raise VoxSegError("--scheduler needs dask.distributed: pip install "
                          "'napari-voxseg[cluster]'") from None
    try:
        return Client(address, timeout="20s")
    except OSError as exc:
        raise VoxSegError(f"cannot reach the dask scheduler at {address} ({exc}); "
                          "check the address (tcp://host:8786)") from None


def _describe(result, model) -> str:
    import numpy as np

    if result.task == "regression":
        values = result.values
        return f"shape {values.shape}, values {values.min():.4g} to {values.max():.4g}"
    if result.task == "multilabel":
        names = [c.get("name", "?") for c in model.config["classes"]]
        axis = result.labels.ndim - 4  # (K, Z, Y, X), or (T, K, Z, Y, X) for a series
        share = ", ".join(f"{n} {100 * np.mean(np.take(result.labels, k, axis) == 2):.1f}%"
                          for k, n in enumerate(names))
        return f"shape {result.labels.shape}, 1 = absent, 2 = present; present: {share}"
    counts = {int(c): int(n) for c, n in zip(*np.unique(result.labels, return_counts=True))}
    return f"shape {result.labels.shape}, voxels per class {counts}"
