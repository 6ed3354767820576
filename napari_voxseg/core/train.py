"""The training loop as a generator: one event per step, stoppable between any two steps.

    gen = iter_train(image, labels, TrainConfig(iterations=200))
    for event in gen:              # TrainEvent(step, total, loss, ...)
        ...                        # stop by making should_stop() true, or by closing gen
    result = ...                   # the generator's return value: TrainResult

:func:`train` runs it to the end and returns the :class:`TrainResult`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import platform
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .. import __version__
from .card import FORMAT, FORMAT_VERSION
from .data import DEFAULT_PERCENTILES, check_image, check_labels, class_weights, normalize
from .device import PRECISIONS, inference_dtype, resolve_device
from .errors import VoxSegError
from .infer import iter_blend, run_to_end
from .losses import LOSSES, build_loss, check_task, resolve_loss, short_name
from .models import architecture_from, build_model, divisors, plan_pooling
from .sampling import PatchSampler
from .targets import boundary_weight_map, prepare_target

# After this many non-finite losses in a row, training stops instead of skipping steps.
MAX_BAD_STEPS = 10
# Fine-tuning a trained model on new strokes starts from this fraction of the learning rate.
FINE_TUNE_LR_FACTOR = 0.1


@dataclass
class TrainConfig:
    """Everything that decides a training run. JSON-able; stored in the saved model."""

    iterations: int = 300
    # None: planned by plan_config from the volume and its voxel size (2 for the 3D network,
    # 8 one-slice patches for the 2D one; (32, 48, 48) for isotropic voxels, flatter and
    # wider for anisotropic ones, (1, 48, 48) for 2D: whole slices let a 2D network learn
    # where the strokes are rather than what they look like; Dice 0.97/0.74/0.60 against
    # 0.83/0.59/0.24 with (1, 64, 64) on the sample).
    batch_size: int | None = None
    patch_size: tuple[int, int, int] | None = None
    # auto: the 2D U-Net (slice by slice) for stacks with fewer slices than the 3D patch,
    # else the 3D U-Net, its pooling planned from the voxel size; or 3d / 2d.
    network: str = "auto"
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    task: str = "multiclass"  # multiclass | multilabel | regression
    loss: str | None = None  # None: the task's default (ce, bce, mse); see losses.LOSSES
    focal_gamma: float = 2.0
    boundary_weight: float = 10.0  # boundary_ce: w0, the extra weight right at a boundary
    boundary_sigma: float = 5.0  # boundary_ce: how fast it falls off, in voxels
    # "none" by default: inverse stroke frequency ("auto") pushes the boundaries of the rarer
    # classes outwards when strokes, not classes, are what is unbalanced.
    class_weights: str | Sequence[float] | None = "none"
    num_classes: int | None = None
    base_channels: int = 8
    depth: int = 3
    device: str = "auto"
    # auto: float16 autocast on CUDA, bfloat16 on a CPU that does it natively (AMX /
    # AVX512-BF16: about 3x faster steps), else float32. Weights and losses stay float32.
    precision: str = "auto"
    seed: int = 0
    num_threads: int | None = None
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    class_names: Sequence[str] | None = None

    def checked(self) -> TrainConfig:
        """A copy with values checked; :class:`VoxSegError` on the first bad one."""
        cfg = copy.deepcopy(self)
        check_task(cfg.task)
        if cfg.precision not in PRECISIONS:
            raise VoxSegError(f"unknown precision {cfg.precision!r}; choose one of "
                              f"{', '.join(PRECISIONS)}")
        cfg.loss = resolve_loss(cfg.loss, cfg.task)
        spec = cfg.class_weights
        if not LOSSES[cfg.loss].class_weights and not (
                spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none"))):
            raise VoxSegError(f"class weights {spec!r} given for a {cfg.task} task, which has "
                              "no classes; set class weights to none")
        for key, low, high, example in (("focal_gamma", 0, 10, 2), ("boundary_weight", 0, 1000, 10),
                                        ("boundary_sigma", 0.01, 1000, 5)):
            value = getattr(cfg, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
                    math.isfinite(value) and low <= value <= high):
                raise VoxSegError(f"{key.replace('_', ' ')} = {value!r}; give a number from {low} "
                                  f"to {high}, e.g. {example}")
        if cfg.network not in NETWORKS:
            raise VoxSegError(f"unknown network {cfg.network!r}; choose one of "
                              f"{', '.join(NETWORKS)}")
        for key, low in (("iterations", 1), ("batch_size", 1)):
            value = getattr(cfg, key)
            if key == "batch_size" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise VoxSegError(f"{key} = {value!r}; give a whole number >= {low}")
        if cfg.iterations > 1_000_000:
            raise VoxSegError(f"iterations = {cfg.iterations} is far too many; give at most "
                              "1000000")
        if not (isinstance(cfg.learning_rate, (int, float)) and 0 < cfg.learning_rate < 1):
            raise VoxSegError(f"learning rate {cfg.learning_rate!r} must be between 0 and 1, "
                              "e.g. 0.003")
        if not isinstance(cfg.depth, int) or not 1 <= cfg.depth <= 6:
            raise VoxSegError(f"depth = {cfg.depth!r}; give a whole number from 1 to 6")
        if cfg.patch_size is not None:
            try:
                cfg.patch_size = tuple(int(p) for p in cfg.patch_size)
            except (TypeError, ValueError):
                raise VoxSegError(f"patch size {cfg.patch_size!r} must be three whole numbers "
                                  "(Z, Y, X)") from None
            if len(cfg.patch_size) != 3 or min(cfg.patch_size) < 1:
                raise VoxSegError(f"patch size {cfg.patch_size} must be three sizes (Z, Y, X) "
                                  "of at least 1")
            if math.prod(cfg.patch_size) * (cfg.batch_size or 1) > 256**3:
                raise VoxSegError(f"patch size {cfg.patch_size} x batch {cfg.batch_size or 1} "
                                  "is too large to train; use patches of at most 128 voxels "
                                  "a side")
        return cfg


NETWORKS = ("auto", "3d", "2d")
# The 3D patch for isotropic voxels and the 2D (one-slice) patch; batch sizes to match.
PATCH_3D, PATCH_2D = (32, 48, 48), (1, 48, 48)
BATCH_3D, BATCH_2D = 2, 8


def plan_config(config: TrainConfig, spatial_shape: Sequence[int],
                voxel_size: Sequence[float] | None = None, *,
                architecture: dict | None = None) -> tuple[TrainConfig, dict]:
    """Resolve what :class:`TrainConfig` leaves to the data: the network (auto: 2D for a
    stack with fewer slices than the 3D patch), its pooling for the voxel size (see
    :func:`~.models.plan_pooling`), the patch and the batch size. Returns the config with
    ``network``, ``patch_size`` and ``batch_size`` filled in, and the architecture's
    ``name``/``strides``/``kernels``. ``architecture``: a model's, when fine-tuning it (its
    network is kept). :class:`VoxSegError` when a given patch does not fit the network."""
    cfg = dataclasses.replace(config)
    shape = tuple(int(s) for s in spatial_shape)
    if architecture is not None:
        network = "2d" if architecture.get("name") == "unet2d" else "3d"
        layout = {k: architecture.get(k) for k in ("name", "strides", "kernels")}
        patch_3d = None
    else:
        strides, kernels = plan_pooling(voxel_size, cfg.depth)
        patch_3d = _anisotropic_patch(voxel_size, strides, cfg.depth)
        network = cfg.network
        if network == "auto":
            network = "2d" if shape[0] < (cfg.patch_size or patch_3d)[0] else "3d"
        layout = ({"name": "unet2d", "strides": None, "kernels": None} if network == "2d" else
                  {"name": "unet3d", "strides": strides, "kernels": kernels})
    divisor = divisors({**layout, "depth": cfg.depth})
    if cfg.patch_size is None:
        planned = PATCH_2D if network == "2d" else patch_3d or _anisotropic_patch(
            voxel_size, layout["strides"], cfg.depth)
        # No bigger than the volume (rounded up to what the network needs).
        cfg.patch_size = tuple(max(d, min(p, -(-s // d) * d))
                               for p, s, d in zip(planned, shape, divisor))
    elif any(p < d or p % d for p, d in zip(cfg.patch_size, divisor)):
        what = "the 2D network" if network == "2d" else f"a network of depth {cfg.depth}"
        raise VoxSegError(f"patch size {cfg.patch_size} must be three sizes (Z, Y, X), "
                          f"multiples of {divisor} for {what}")
    if cfg.batch_size is None:
        cfg.batch_size = BATCH_2D if network == "2d" else BATCH_3D
    cfg.network = network
    return cfg, layout


def _anisotropic_patch(voxel_size, strides, depth: int) -> tuple[int, int, int]:
    """The isotropic 3D patch, made flatter along coarse axes and wider along fine ones so
    that it covers a less lopsided piece of space, with about as many voxels."""
    divisor = divisors({"name": "unet3d", "strides": strides, "depth": depth})
    if voxel_size is None or strides is None:
        return tuple(max(d, p // d * d) for p, d in zip(PATCH_3D, divisor))
    finest = min(voxel_size)
    shape = [p * finest / v for p, v in zip(PATCH_3D, voxel_size)]
    grow = (math.prod(PATCH_3D) / math.prod(shape)) ** (1 / 3)
    return tuple(max(d, min(128, int(round(s * grow / d)) * d))
                 for s, d in zip(shape, divisor))


@dataclass
class TrainEvent:
    """What one step did; yielded after each step."""

    step: int
    total: int
    loss: float
    smoothed_loss: float
    learning_rate: float
    elapsed: float
    annotated: int  # annotated voxels the step trained on


@dataclass
class PreviewEvent:
    """A prediction of part of the volume by the network as it is at ``step`` (live preview).

    ``region``: three slices (Z, Y, X) of the volume; ``result``: a PredictResult of the
    region's shape (labels, per-class labels or values by task)."""

    step: int
    total: int
    region: tuple[slice, slice, slice]
    result: object
    annotated: int
    elapsed: float
    seconds: float  # how long the preview took


@dataclass
class ResumeState:
    """Where a stopped run was, to continue it exactly (``iter_train(..., resume=state)``)."""

    config: TrainConfig
    step: int  # steps of config.iterations done
    model_state: dict  # the weights after the last step (the result's model holds the best)
    optimizer_state: dict
    sampler_state: dict
    smoothed: float | None
    best_state: dict | None
    best_loss: float
    best_step: int
    previous_steps: int
    history: list
    old_history: list
    skipped: int


@dataclass
class TrainResult:
    model: torch.nn.Module  # the best model seen, in eval mode, with .config
    history: list[tuple[int, float]]  # (step, loss)
    stopped: bool  # True when stopped before the last iteration
    steps: int
    best_step: int
    best_loss: float
    elapsed: float = 0.0
    skipped_steps: int = 0
    extra: dict = field(default_factory=dict)
    warning: str = ""  # why training stopped early by itself (e.g. repeated NaN losses)
    resume: ResumeState | None = None  # set when stopped by should_stop: continue from here
    adjustments: list = field(default_factory=list)  # e.g. a smaller batch after GPU OOM


def _versions() -> dict:
    return {"napari_voxseg": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _loss_record(cfg: TrainConfig) -> dict:
    """The loss and the settings it used, for config.json."""
    record = {"name": short_name(cfg.loss)}
    if LOSSES[cfg.loss].gamma:
        record["focal_gamma"] = cfg.focal_gamma
    if LOSSES[cfg.loss].factory.uses_voxel_weights:
        record.update(boundary_weight=cfg.boundary_weight, boundary_sigma=cfg.boundary_sigma)
    return record


def _smaller(batch: int, patch: Sequence[int], divisor: Sequence[int]):
    """After running out of GPU memory: half the batch, or at batch 1 half the patch's longest
    axis that can be halved (to a multiple of its ``divisor``); None when nothing can shrink."""
    if batch > 1:
        return batch // 2, tuple(patch)
    for axis in sorted(range(3), key=lambda a: -patch[a]):
        half = (patch[axis] // 2) // divisor[axis] * divisor[axis]
        if half >= divisor[axis]:
            return 1, tuple(half if a == axis else p for a, p in enumerate(patch))
    return None


def _lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over the first 5% of steps (at most 100, so that a run meant to go on
    until stopped learns at once), then cosine decay to 5% of the base rate."""
    warmup = max(1, min(total // 20, 100))
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def iter_train(
    image,
    labels,
    config: TrainConfig | None = None,
    *,
    model: torch.nn.Module | None = None,
    voxel_size: Sequence[float] | None = None,
    should_stop: Callable[[], bool] | None = None,
    get_labels: Callable[[], np.ndarray | None] | None = None,
    mask=None,
    boundary_reference=None,
    preview_region: Callable[[], Sequence[slice] | None] | None = None,
    preview_every: float = 5.0,
    preview_now: Callable[[], bool] | None = None,
    resume: ResumeState | None = None,
) -> Generator[TrainEvent | PreviewEvent, None, TrainResult]:
    """Train a network on strokes; yield a :class:`TrainEvent` per step; return a TrainResult.

    ``image``: ``(Z, Y, X)`` or ``(C, Z, Y, X)``. ``labels`` depends on ``config.task``:
    multiclass: integer ``(Z, Y, X)``, 0 = not annotated, 1..K = classes; multilabel: ``(K, Z,
    Y, X)`` or a list of K ``(Z, Y, X)`` volumes, 0 = not annotated, 1 = absent, 2 = present;
    regression: the float target ``(Z, Y, X)``, with ``mask`` (nonzero = known) optional.
    ``model``: continue from (fine-tune) this model instead of a new one. ``should_stop``:
    polled before each step. ``get_labels``: polled every few steps for newer strokes (for
    regression: a newer mask); it returns None when unchanged. ``boundary_reference``: labels
    (e.g. a prediction) that the ``boundary_ce`` weight map is computed from instead of the
    strokes. Bad input raises :class:`VoxSegError` before any work.

    Live preview: every ``preview_every`` seconds, ``preview_region()`` is asked which block
    (three slices, Z, Y, X) to predict with the network as it is, and a :class:`PreviewEvent`
    is yielded with the result; None skips that preview. ``preview_now()``, polled every step,
    makes a preview due at once when true (e.g. the user asked for one). Newer strokes are
    fetched first, so a preview always follows the strokes painted before it.

    ``resume``: the ``resume`` of a stopped run's TrainResult, with ``model`` its model:
    continue that run where it stopped (its config, schedule, optimizer and patch sequence).
    """
    if resume is not None:
        if model is None:
            raise VoxSegError("to continue a run, pass the model it returned as well")
        config = resume.config
    elif model is not None:  # fine-tune: the model's network and intensity normalization
        arch = model.config["architecture"]
        norm = model.config.get("normalization", {})
        config = config or TrainConfig()
        config = dataclasses.replace(
            config, depth=arch["depth"], base_channels=arch["base_channels"],
            patch_size=config.patch_size or tuple(model.config["patch_size"]),
            percentiles=(norm.get("low", DEFAULT_PERCENTILES[0]),
                         norm.get("high", DEFAULT_PERCENTILES[1])))
    cfg = (config or TrainConfig()).checked()
    if voxel_size is not None:
        voxel_size = tuple(voxel_size)
        if len(voxel_size) != 3 or not all(
                isinstance(v, (int, float, np.number)) and math.isfinite(v) and v > 0
                for v in voxel_size):
            raise VoxSegError(f"voxel size {voxel_size} must be 3 positive numbers (Z, Y, X)")
    task = cfg.task
    if model is not None:
        model_task = model.config.get("task", "multiclass")
        if model_task != task:
            raise VoxSegError(f"the loaded model does a {model_task} task, not {task}; choose "
                              f"task {model_task} or train a new model")
    channels = model.config["architecture"]["in_channels"] if model is not None else None
    image = check_image(image, channels=channels)
    cfg, layout = plan_config(cfg, image.shape[1:], voxel_size, architecture=None
                              if model is None else model.config["architecture"])
    known_classes = model.config["architecture"]["num_classes"] if model is not None else None
    if known_classes is not None and task == "multiclass" and not cfg.num_classes:
        strokes = np.asarray(labels)
        top = int(strokes.max()) if strokes.dtype.kind in "iu" and strokes.size else 0
        if top > known_classes:
            raise VoxSegError(f"the strokes use class {top} but the model being trained further "
                              f"has {known_classes} classes; erase the strokes of classes above "
                              f"{known_classes}, or train a new model")
    target = prepare_target(task, labels, image.shape[1:], mask=mask,
                            num_classes=cfg.num_classes or known_classes, names=cfg.class_names)
    num_classes = target.num_outputs
    if known_classes is not None and num_classes != known_classes:
        raise VoxSegError(f"the loaded model has {known_classes} classes but {num_classes} were "
                          f"asked for; use class count {known_classes} or train a new model")
    weights = class_weights(cfg.class_weights, target.data, num_classes, task=task)
    loss_fn = build_loss(cfg.loss, class_weights=weights, task=task,
                         focal_gamma=cfg.focal_gamma)
    device = resolve_device(cfg.device)
    boundary = None
    if loss_fn.uses_voxel_weights:
        if boundary_reference is not None:
            boundary_reference, _ = check_labels(boundary_reference, image.shape[1:],
                                                 name="boundary reference")

        def boundary_map(strokes):
            return boundary_weight_map(
                strokes if boundary_reference is None else boundary_reference,
                w0=cfg.boundary_weight, sigma=cfg.boundary_sigma, voxel_size=voxel_size)

        boundary = boundary_map(target.data)

    if model is None:
        arch = architecture_from(in_channels=image.shape[0], num_classes=num_classes,
                                 base_channels=cfg.base_channels, depth=cfg.depth, **layout)
        torch.manual_seed(cfg.seed)
        model = build_model(arch)
        previous_steps = 0
    else:
        arch = dict(model.config["architecture"])
        previous_steps = int(model.config.get("training", {}).get("steps_done", 0))
    old_history = model.config.get("training", {}).get("history", []) \
        if hasattr(model, "config") else []
    names = list(cfg.class_names or [])[:num_classes]
    if task == "regression":
        names = names or ["value"]
    names += [f"class {i}" for i in range(len(names) + 1, num_classes + 1)]

    normalized = normalize(image, *cfg.percentiles)
    sampler = PatchSampler(normalized, target.data, cfg.patch_size, strata=target.strata,
                           voxel_weights=boundary, fill=target.fill, seed=cfg.seed)
    model.to(device).train()
    loss_fn = loss_fn.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    amp = inference_dtype(device, cfg.precision, task)
    if amp == torch.bfloat16 and cfg.patch_size[0] == 1 and arch["name"] != "unet2d":
        # PyTorch 2.13's CPU bfloat16 Conv3d backward crashes (segfault) on inputs one slice
        # deep; such patches (a 3D network forced onto a one-slice stack) train in float32.
        amp = None
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    old_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))

    history: list[tuple[int, float]] = []
    best_state, best_loss, best_step = None, math.inf, -1
    smoothed, bad_in_a_row, skipped, stopped, warning = None, 0, 0, False, ""
    first = 0
    if resume is not None:
        model.load_state_dict(resume.model_state)
        optimizer.load_state_dict(resume.optimizer_state)
        sampler.rng.bit_generator.state = resume.sampler_state
        first, previous_steps, old_history = resume.step, resume.previous_steps, \
            resume.old_history
        history, smoothed, skipped = list(resume.history), resume.smoothed, resume.skipped
        best_state, best_loss, best_step = resume.best_state, resume.best_loss, resume.best_step
    start = time.perf_counter()
    last_preview = start
    step = first
    adjustments: list[str] = []

    def train_step() -> float:
        """One optimizer step on a fresh batch; the loss (not applied when not finite)."""
        x, y, w = sampler.batch(cfg.batch_size)
        x = torch.from_numpy(x).to(device, non_blocking=True)
        y = torch.from_numpy(y).to(device, non_blocking=True)
        if w is not None:
            w = torch.from_numpy(w).to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            outputs = model(x)
        loss = loss_fn(outputs.float(), y, w)
        value = float(loss.detach())
        if math.isfinite(value):
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return value

    def preview(step):
        """Predict the region asked for with the network as it is now."""
        region = preview_region()
        if region is None:
            return None
        region = tuple(slice(*r.indices(n)[:2]) for r, n in zip(region, image.shape[1:]))
        began = time.perf_counter()
        result = run_to_end(iter_blend(
            model, normalized, task=task, divisor=divisors(arch), patch_size=cfg.patch_size,
            target_scale=target.scale_record,
            region=region, batch_size=cfg.batch_size, should_stop=should_stop,
            precision=cfg.precision))
        model.train()
        if result.cancelled:
            return None
        now = time.perf_counter()
        return PreviewEvent(step=step, total=cfg.iterations, region=tuple(region),
                            result=result, annotated=sampler.annotated,
                            elapsed=now - start, seconds=now - began)

    try:
        for step in range(first, cfg.iterations):
            if should_stop is not None and should_stop():
                stopped = True
                break
            due = preview_region is not None and step > first and (
                time.perf_counter() - last_preview >= preview_every
                or (preview_now is not None and preview_now()))
            if get_labels is not None and (step % 10 == 0 or due):
                fresh = get_labels()
                if fresh is not None:
                    # For regression the hook returns a new mask for the same target.
                    if task == "regression":
                        target = prepare_target(task, labels, image.shape[1:], mask=fresh,
                                                scale=target.scale)
                    else:
                        target = prepare_target(task, fresh, image.shape[1:],
                                                num_classes=num_classes, names=cfg.class_names)
                    if boundary is not None and boundary_reference is None:
                        boundary = boundary_map(target.data)  # the strokes' boundaries moved
                    sampler.update_labels(target.data, strata=target.strata,
                                          voxel_weights=boundary)
            if due:
                event = preview(step)
                last_preview = time.perf_counter()
                if event is not None:
                    yield event
            lr = _lr_at(step, cfg.iterations, cfg.learning_rate)
            for group in optimizer.param_groups:
                group["lr"] = lr
            while True:
                try:
                    value = train_step()
                    break
                except torch.cuda.OutOfMemoryError:
                    optimizer.zero_grad(set_to_none=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    smaller = _smaller(cfg.batch_size, cfg.patch_size, divisors(arch))
                    if smaller is None:
                        raise VoxSegError(
                            "the GPU ran out of memory even for one patch of "
                            f"{cfg.patch_size}; train on the CPU (device cpu) or free GPU "
                            "memory") from None
                    cfg.batch_size, patch = smaller
                    if patch != cfg.patch_size:
                        cfg.patch_size = patch
                        sampler = sampler.resized(patch)
                    adjustments.append(f"the GPU ran out of memory at step {step + 1}; went on "
                                       f"with batch {cfg.batch_size} and patch "
                                       f"{tuple(cfg.patch_size)}")
            if not math.isfinite(value):
                skipped += 1
                bad_in_a_row += 1
                if bad_in_a_row >= MAX_BAD_STEPS:
                    message = (f"the loss was NaN or infinite {MAX_BAD_STEPS} steps in a row; "
                               "lower the learning rate or check the image for extreme values")
                    if not history:  # nothing learned yet: there is no model worth keeping
                        raise VoxSegError(message)
                    # Skipped steps never touched the weights: keep the best model so far.
                    stopped, warning = True, f"training stopped: {message}"
                    break
                continue
            bad_in_a_row = 0
            history.append((previous_steps + step + 1, value))
            smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
            if step >= cfg.iterations // 10 and smoothed < best_loss and (
                step % 5 == 0 or step == cfg.iterations - 1
            ):
                best_loss, best_step = smoothed, step + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            yield TrainEvent(step=step + 1, total=cfg.iterations, loss=value,
                             smoothed_loss=smoothed, learning_rate=lr,
                             elapsed=time.perf_counter() - start, annotated=sampler.annotated)
        else:
            step = cfg.iterations
    finally:
        if cfg.num_threads:
            torch.set_num_threads(old_threads)

    steps_done = step
    resume_state = None
    if stopped and not warning:
        resume_state = ResumeState(
            config=cfg, step=steps_done, optimizer_state=copy.deepcopy(optimizer.state_dict()),
            model_state={k: v.detach().clone() for k, v in model.state_dict().items()},
            sampler_state=copy.deepcopy(sampler.rng.bit_generator.state), smoothed=smoothed,
            best_state=best_state, best_loss=best_loss, best_step=best_step,
            previous_steps=previous_steps, history=list(history), old_history=old_history,
            skipped=skipped)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_loss = smoothed if smoothed is not None else math.nan
        best_step = steps_done
    model.eval()
    model.config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "task": task,
        "loss": _loss_record(cfg),
        "classes": [{"id": i + 1, "name": str(n)} for i, n in enumerate(names)],
        "target_scale": target.scale_record,
        "normalization": {"method": "percentile", "low": cfg.percentiles[0],
                          "high": cfg.percentiles[1]},
        "patch_size": list(cfg.patch_size),
        "voxel_size": None if voxel_size is None else [float(v) for v in voxel_size],
        "training": {
            **{k: v for k, v in asdict(cfg).items() if k not in ("class_names", "device")},
            "class_weights": None if weights is None else [float(w) for w in weights],
            "stroke_counts": target.counts(),
            "steps_done": previous_steps + steps_done,
            "best_step": previous_steps + best_step,
            "best_loss": None if not math.isfinite(best_loss) else float(best_loss),
            "history": old_history + [list(h) for h in history[:: max(
                1, len(history) // 200)]],
            "device": str(device),
        },
        "versions": _versions(),
    }
    return TrainResult(model=model, history=history, stopped=stopped, steps=steps_done,
                       best_step=best_step, best_loss=best_loss,
                       elapsed=time.perf_counter() - start, skipped_steps=skipped,
                       warning=warning, resume=resume_state, adjustments=adjustments)


def train(image, labels, config: TrainConfig | None = None, **kwargs) -> TrainResult:
    """Run :func:`iter_train` to the end."""
    return run_to_end(iter_train(image, labels, config, **kwargs))
