"""``python -m napari_voxseg train | predict | evaluate | suggest | export | demo`` (see
docs/architecture.md).

Bad input ends with one line on stderr (``error: ...``) and exit code 2; no traceback and no
output file is left behind.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .cli_args import EXIT_BAD_INPUT, build_parser
from .cli_common import Progress, _floats, _read_image, log, note, setup_logging
from .cli_evaluate import cmd_evaluate


def _names(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [n.strip() for n in text.split(",")]


def _train_config(args, model):
    """The TrainConfig the arguments ask for (fine-tuning ``model`` when given)."""
    from .core import TrainConfig
    from .core.train import fine_tune_config

    given = dict(
        iterations=args.iterations, task=args.task, loss=args.loss,
        class_weights=args.class_weights, num_classes=args.classes, device=args.device,
        seed=args.seed, num_threads=args.threads, focal_gamma=args.focal_gamma,
        precision=args.precision, network=args.network,
        boundary_weight=args.boundary_weight, boundary_sigma=args.boundary_sigma,
        class_names=_names(args.class_names), batch_size=args.batch_size,
        learning_rate=args.learning_rate, two_stage=args.two_stage,
        patch_size=tuple(int(v) for v in _floats(args.patch_size, 3, "--patch-size"))
        if args.patch_size else None)
    if model is not None:
        return fine_tune_config(model, **given)
    return TrainConfig(**{k: v for k, v in given.items() if v is not None})


def cmd_train(args) -> int:
    from .core import distributed
    from .core.checkpoint import check_model_folder

    pairs = _pairs(args)
    inputs = [args.image, *args.labels, *(p for pair in pairs for p in pair), args.mask,
              args.boundary_from, args.init]
    # fail now, not after minutes of training
    out = check_model_folder(args.out, inputs=inputs, overwrite=args.overwrite)
    rank, world, backend = distributed.start(args.device)  # under torchrun: join the group
    try:
        code = _train(args, out, rank, world, backend, pairs)
    except BaseException:
        distributed.finish(ok=False)
        raise
    distributed.finish()
    return code


def _pairs(args) -> list:
    """The (image, labels) paths of --pair and --dataset (none for IMAGE LABELS); one line
    when the ways are mixed or a dataset folder is not sound."""
    from .core.errors import VoxSegError

    pairs = [tuple(p) for p in (args.pair or [])]
    if args.dataset:
        from .core.datasets import dataset_pairs

        pairs += dataset_pairs(args.dataset)
    if pairs and (args.image or args.labels):
        raise VoxSegError("give IMAGE LABELS for one volume, or --pair / --dataset for several, "
                          "not both")
    if not pairs and not (args.image and args.labels):
        raise VoxSegError("give IMAGE and LABELS, or --pair IMAGE LABELS (repeated), or "
                          "--dataset DIR")
    if pairs and (args.mask or args.boundary_from):
        raise VoxSegError("--mask and --boundary-from take one volume; train several without "
                          "them")
    return pairs


def _read_pairs(args, pairs: list):
    """The pairs' volumes, and their voxel sizes (--voxel-size for all, else each file's)."""
    from .core import read_volume

    read, voxels = [], []
    for image_path, labels_path in pairs:
        image, voxel = _read_image(image_path, args.channel_axis)
        read.append((image, read_volume(labels_path)[0]))
        voxels.append(_floats(args.voxel_size, 3, "--voxel-size") if args.voxel_size
                      else voxel)
    return read, voxels


def _train(args, out, rank: int, world: int, backend: str, pairs: list) -> int:
    from .core import (
        TrainEvent,
        ValidationEvent,
        iter_train,
        load_model,
        read_volume,
        run_to_end,
        save_model,
    )
    from .core.errors import VoxSegError
    from .core.tasks import task_info

    model = load_model(args.init, device=args.device) if args.init else None
    config = _train_config(args, model).checked()  # before reading any volume
    _say_settings(config)
    if len(args.labels) > 1 and task_info(config.task).label_files == "one":
        raise VoxSegError(f"{len(args.labels)} label files given for a {config.task} task, which "
                          "takes one; give several only with --task multilabel (one per class)")
    if args.boundary_from and config.loss != "boundary_ce":
        raise VoxSegError("--boundary-from is for --loss boundary_ce; drop it or use that loss")
    if pairs:
        image, voxel = _read_pairs(args, pairs)
        labels = None
    else:
        image, voxel = _read_image(args.image, args.channel_axis)
        volumes = [read_volume(path)[0] for path in args.labels]
        labels = volumes if config.task == "multilabel" and len(volumes) > 1 else volumes[0]
        if config.task == "multilabel" and config.class_names is None and len(volumes) > 1:
            config.class_names = [Path(p).name.split(".")[0] for p in args.labels]
        if args.voxel_size:
            voxel = _floats(args.voxel_size, 3, "--voxel-size")
    mask = read_volume(args.mask)[0] if args.mask else None
    reference = read_volume(args.boundary_from)[0] if args.boundary_from else None
    if world > 1 and rank == 0:
        note(f"distributed: {world} processes ({backend}), each drawing patches of its own, "
             "gradients averaged at every step; rank 0 writes the model")
    bar = Progress("train") if rank == 0 else None
    judged: dict = {}

    def show(event):
        if isinstance(event, ValidationEvent):  # two stages: the U-Net against stage 1
            judged["text"] = (f"held out: U-Net {event.network[0]:.3f}, stage 1 "
                              f"{event.stage1[0]:.3f}")
        elif isinstance(event, TrainEvent) and bar is not None:
            bar.update(event.step, event.total, "  ".join(
                [f"loss {event.smoothed_loss:.4f}", *judged.values()]))

    result = run_to_end(iter_train(image, labels, config, voxel_size=voxel, mask=mask,
                                   boundary_reference=reference, model=model), show)
    if rank != 0:  # one model, written by rank 0 alone
        return 0
    bar.close()
    if world > 1:
        done = result.model.config["training"]
        note(f"distributed: batch {done['batch_size']} per process, {world * done['batch_size']} "
             f"a step in all; learning rate {done['learning_rate']:g}")
    for adjustment in result.adjustments:
        note(f"note: {adjustment}")
    judgement = result.model.config["training"].get("validation")
    if judgement:
        note(f"kept {judgement['kept']}: the U-Net is kept only when it beats stage 1 on the "
             f"{judgement['held_out_voxels']} held-out stroke voxels")
    from .core.models import describe_network

    log.info(f"network: {describe_network(result.model.config)}; patch "
             f"{tuple(result.model.config['patch_size'])}")
    if result.warning:
        print(f"warning: {result.warning}; saving the best model so far (step "
              f"{result.best_step})", file=sys.stderr)
    save_model(result.model, out, overwrite=args.overwrite)
    kept = (judgement or {}).get("kept")
    best = ("stage 1 kept" if kept == "stage 1" else
            f"best smoothed loss {result.best_loss:.4f} at step {result.best_step}")
    log.info(f"saved model to {out} ({result.steps} steps, {best}, {result.elapsed:.0f} s)")
    return 0


def cmd_demo(args) -> int:
    from ._qt.demo import run_demo

    return run_demo(headless=args.headless, out_dir=Path(args.out), iterations=args.iterations)


def _say_settings(config) -> None:
    """With -v: every training setting, and the device and precision they resolve to."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    from dataclasses import asdict

    from .core.device import inference_dtype, resolve_device

    device = resolve_device(config.device)
    dtype = inference_dtype(device, config.precision, config.task)
    log.debug(f"device {device}, computing in {str(dtype or 'float32').replace('torch.', '')}")
    log.debug("settings: " + json.dumps(asdict(config), default=str))


def main(argv=None) -> int:
    from .cli_export import cmd_export
    from .cli_predict import cmd_predict
    from .cli_suggest import cmd_suggest

    parser = build_parser(train=cmd_train, predict=cmd_predict, evaluate=cmd_evaluate,
                          suggest=cmd_suggest, export=cmd_export, demo=cmd_demo)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from .core.errors import VoxSegError

    try:
        return args.func(args)
    except VoxSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
