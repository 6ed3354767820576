"""The training loop as a generator: one event per step, stoppable between any two steps.

    gen = iter_train(image, labels, TrainConfig(iterations=200))
    for event in gen:              # TrainEvent(step, total, loss, ...)
        ...                        # stop by making should_stop() true, or by closing gen
    result = ...                   # the generator's return value: TrainResult

:func:`train` runs it to the end and returns the :class:`TrainResult`. The loop is made of
named phases over one :class:`~.run.Run`, the run's whole state (which :class:`ResumeState`
snapshots): :func:`~.run.prepare_run` (checks, target, network, optimizer), :func:`_step`
(one optimizer step, with its out-of-memory retry), :func:`_refresh_strokes`,
:func:`_preview`, :func:`_record` and :func:`~.finish.finish_run` (best weights, model card,
resume state).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Generator, Sequence

import numpy as np
import torch

from . import distributed
from .config import (  # noqa: F401  (re-exported: the training API in one place)
    FINE_TUNE_LR_FACTOR,
    NETWORKS,
    TrainConfig,
    adopt_model,
    fine_tune_config,
    plan_config,
)
from .errors import VoxSegError
from .events import PreviewEvent, ResumeState, TrainEvent, TrainResult
from .finish import finish_run
from .infer import PredictResult, iter_blend, run_to_end
from .judge import judge, network_chosen, validation_every
from .models import divisors
from .run import Run, prepare_run, restore_run, stage_previews
from .targets import prepare_target
from .two_stage import iter_fit_stage, stage_device, stage_labels, training_labels
from .validation import still_held

# After this many non-finite losses in a row, training stops instead of skipping steps.
MAX_BAD_STEPS = 10


# ---- one step -------------------------------------------------------------------------------
def _lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over the first 5% of steps (at most 100, so that a run meant to go on
    until stopped learns at once), then cosine decay to 5% of the base rate."""
    warmup = max(1, min(total // 20, 100))
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


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


def _optimizer_step(run: Run) -> float:
    """One optimizer step on a fresh batch; the loss (not applied when not finite)."""
    cfg, device = run.cfg, run.device
    assert cfg.batch_size is not None  # planned
    images, labels, weights = run.sampler.batch(cfg.batch_size)
    x = torch.from_numpy(images).to(device, non_blocking=True)
    y = torch.from_numpy(labels).to(device, non_blocking=True)
    w = None
    if weights is not None:
        w = torch.from_numpy(weights).to(device, non_blocking=True)
    run.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=run.amp or torch.float32,
                        enabled=run.amp is not None):
        outputs = (run.forward or run.model)(x)
    loss = run.loss_fn(outputs.float(), y, w)
    value = distributed.mean(float(loss.detach()))  # every process decides alike
    if math.isfinite(value):
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    return value


def _shrink_after_oom(run: Run, step: int) -> None:
    """The GPU ran out of memory: go on with half the batch (or patch), and say so."""
    run.optimizer.zero_grad(set_to_none=True)
    if run.device.type == "cuda":
        torch.cuda.empty_cache()
    cfg = run.cfg
    assert cfg.batch_size is not None and cfg.patch_size is not None  # planned
    smaller = _smaller(cfg.batch_size, cfg.patch_size, divisors(run.arch))
    if smaller is None:
        raise VoxSegError(f"the GPU ran out of memory even for one patch of {cfg.patch_size}; "
                          "train on the CPU (device cpu) or free GPU memory") from None
    cfg.batch_size, patch = smaller
    if patch != cfg.patch_size:
        cfg.patch_size = patch
        run.sampler = run.sampler.resized(patch)
    run.adjustments.append(f"the GPU ran out of memory at step {step + 1}; went on with batch "
                           f"{cfg.batch_size} and patch {tuple(cfg.patch_size)}")


def _step(run: Run, step: int) -> float:
    """Step ``step`` at its scheduled learning rate, retried smaller after a GPU OOM."""
    lr = _lr_at(step, run.cfg.iterations, run.cfg.learning_rate)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    while True:
        try:
            return _optimizer_step(run)
        except torch.cuda.OutOfMemoryError:
            if run.forward is not None:  # DDP: the processes cannot shrink in step
                raise VoxSegError("a GPU ran out of memory under torchrun; give a smaller "
                                  "--batch-size or --patch-size") from None
            _shrink_after_oom(run, step)


# ---- strokes painted meanwhile, previews, bookkeeping ------------------------------------
def _refresh_strokes(run: Run, fresh, region):
    """Train on newer strokes from now on (regression: a newer mask for the same target).
    Two stages: stage 1 is fitted again on them at once (a generator: its overlays are
    yielded), and the network meets its new probabilities at its next step. Strokes that
    cannot be trained on (all erased, one class left) leave the run on the ones it had.
    ``region``: the region in view (a callable, as :func:`iter_train` takes it), None to
    show nothing."""
    if fresh is None:
        return
    task, shape = run.task, run.normalized.shape[1:]
    try:
        if task == "regression":
            target = prepare_target(task, run.labels, shape, mask=fresh,
                                    scale=run.target.scale)
        else:
            target = prepare_target(task, fresh, shape, num_classes=run.target.num_outputs,
                                    names=run.cfg.class_names)
        stage = None
        if run.stage is not None:
            assert run.image is not None  # prepare_run keeps it
            stage = yield from stage_previews(iter_fit_stage(
                run.image, target.data, target.num_outputs, run.voxel_size,
                seed=run.cfg.seed, overlay=region is not None, region=region,
                device=stage_device(run.device),
                held="split" if run.stage.held_out is None else
                still_held(run.stage.held_out, target.data)),
                run.start, run.cfg.iterations, target.annotated, task)
    except VoxSegError as error:
        note = f"strokes painted during training were not used ({error})"
        if note not in run.adjustments:
            run.adjustments.append(note)
        return
    run.target = target
    if stage is not None:
        run.set_stage(stage)
        run.best_score = run.best_state = None  # judged afresh against the new stage 1
    if run.boundary_map is not None:
        run.boundary = run.boundary_map(run.target.data)  # the strokes' boundaries moved
    drawn, weights, strata = training_labels(run.stage, run.target.data, run.boundary,
                                             run.target.strata)
    run.sampler.update_labels(drawn, strata=strata, voxel_weights=weights)


def _preview(run: Run, step: int, region, should_stop) -> PreviewEvent | None:
    """Predict ``region`` with the network as it is now (None: skipped or stopped); while the
    network has not beaten stage 1 on the held-out strokes, stage 1's overlay instead."""
    if region is None:
        return None
    shape = run.normalized.shape[1:]
    region = tuple(slice(*r.indices(n)[:2]) for r, n in zip(region, shape))
    began = time.perf_counter()
    if run.stage is not None and not network_chosen(run) and run.stage.overlay is not None:
        probs = run.stage.overlay[(slice(None), *region)]
        result = PredictResult(labels=stage_labels(probs, run.task), task=run.task)
        stage = 1
    else:
        assert run.cfg.patch_size is not None and run.cfg.batch_size is not None  # planned
        result, stage = run_to_end(iter_blend(
            run.model, run.normalized, task=run.task, divisor=divisors(run.arch),
            patch_size=run.cfg.patch_size, target_scale=run.target.scale_record,
            region=region, batch_size=run.cfg.batch_size, should_stop=should_stop,
            precision=run.cfg.precision)), 2
        run.model.train()
    if result.cancelled:
        return None
    now = time.perf_counter()
    return PreviewEvent(step=step, total=run.cfg.iterations, region=region, result=result,
                        annotated=run.sampler.annotated, elapsed=now - run.start,
                        seconds=now - began, stage=stage)


def _bad_step(run: Run) -> str:
    """A NaN or infinite loss (its step was not applied): "" to go on, or why to stop."""
    run.skipped += 1
    run.bad_in_a_row += 1
    if run.bad_in_a_row < MAX_BAD_STEPS:
        return ""
    message = (f"the loss was NaN or infinite {MAX_BAD_STEPS} steps in a row; lower the "
               "learning rate or check the image for extreme values")
    if not run.history:  # nothing learned yet: there is no model worth keeping
        raise VoxSegError(message)
    return f"training stopped: {message}"  # skipped steps never touched the weights


def _record(run: Run, step: int, value: float) -> TrainEvent:
    """Book a good step: history, smoothed loss, the best weights so far."""
    cfg = run.cfg
    run.bad_in_a_row = 0
    run.history.append((run.previous_steps + step + 1, value))
    run.smoothed = value if run.smoothed is None else 0.9 * run.smoothed + 0.1 * value
    if run.stage is None and step >= cfg.iterations // 10 and run.smoothed < run.best_loss and (
            step % 5 == 0 or step == cfg.iterations - 1):
        run.best_loss, run.best_step = run.smoothed, step + 1
        run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    return TrainEvent(step=step + 1, total=cfg.iterations, loss=value,
                      smoothed_loss=run.smoothed,
                      learning_rate=run.optimizer.param_groups[0]["lr"],
                      elapsed=time.perf_counter() - run.start, annotated=run.sampler.annotated)


def _distribute(run: Run) -> None:
    """Under torchrun: the step runs the network through DDP, and each process draws its own
    patches (its own stream of the run's seed)."""
    rank, size = distributed.world()
    if size > 1:
        run.forward = distributed.wrap(run.model, run.device)
        run.sampler.rng = np.random.default_rng([run.cfg.seed, rank])


@contextlib.contextmanager
def _threads(count: int | None):
    """torch's CPU thread count for the run, restored after."""
    old = torch.get_num_threads()
    if count:
        torch.set_num_threads(int(count))
    try:
        yield
    finally:
        if count:
            torch.set_num_threads(old)


# ---- the loop -------------------------------------------------------------------------------
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

    ``image``: ``(Z, Y, X)`` or ``(C, Z, Y, X)``; or a list of ``(image, labels)`` pairs
    (``labels`` None, or the config in its place; ``voxel_size`` one per pair or one for all):
    several volumes trained together, see :mod:`.volumes` (``get_labels`` then returns each
    pair's strokes, a list; previews cover the first pair). ``labels`` depends on
    ``config.task``:
    multiclass: integer ``(Z, Y, X)``, 0 = not annotated, 1..K = classes; multilabel: ``(K, Z,
    Y, X)`` or a list of K ``(Z, Y, X)`` volumes, 0 = not annotated, 1 = absent, 2 = present;
    regression: the float target ``(Z, Y, X)``, with ``mask`` (nonzero = known) optional.
    ``model``: continue from (fine-tune) this model instead of a new one. ``should_stop``:
    polled before each step, and while stage 1 fits (a stop then, before any step, raises
    :class:`~.errors.StoppedEarly`: no model was made). ``get_labels``: polled every few
    steps for newer strokes (for regression: a newer mask); it returns None when unchanged.
    ``boundary_reference``: labels (e.g. a prediction) that the ``boundary_ce`` weight map is
    computed from instead of the strokes. Bad input raises :class:`VoxSegError` before any work.

    Live preview: every ``preview_every`` seconds, ``preview_region()`` is asked which block
    (three slices, Z, Y, X) to predict with the network as it is, and a :class:`PreviewEvent`
    is yielded with the result; None skips that preview. ``preview_now()``, polled every step,
    makes a preview due at once when true (e.g. the user asked for one). Newer strokes are
    fetched first, so a preview always follows the strokes painted before it.

    Two stages (``config.two_stage``, the multi-class default): with ``preview_region`` given,
    stage 1's whole-volume overlays come first (``PreviewEvent`` with ``stage`` 1, step 0;
    on a large volume the first covers the region in view alone, in seconds), before any
    step and again after each refit on newer strokes; while the network has not
    beaten stage 1 on the held-out strokes, previews show stage 1's overlay. A
    :class:`~.events.ValidationEvent` follows each judging of the network (see :mod:`.judge`).

    ``resume``: the ``resume`` of a stopped run's TrainResult, with ``model`` its model:
    continue that run where it stopped (its config, schedule, optimizer and patch sequence).
    """
    if isinstance(labels, TrainConfig) and config is None:  # train([(image, labels)], config)
        labels, config = None, labels
    image, labels, voxel_size, canvas = _several(image, labels, config, voxel_size, mask,
                                                 boundary_reference)
    loop = _loop(image, labels, config, model=model, voxel_size=voxel_size,
                 should_stop=should_stop, mask=mask, boundary_reference=boundary_reference,
                 preview_region=preview_region, preview_every=preview_every,
                 preview_now=preview_now, resume=resume,
                 get_labels=get_labels if canvas is None else canvas.follow(get_labels))
    if canvas is None:
        return (yield from loop)
    result = yield from canvas.first_pair_only(loop)
    result.adjustments[:0] = canvas.notes
    result.model.config["training"]["volumes"] = len(canvas.regions)
    return result


def _loop(image, labels, config, *, model, voxel_size, should_stop, get_labels, mask,
          boundary_reference, preview_region, preview_every, preview_now, resume):
    """:func:`iter_train` on one volume (or on the canvas of several)."""
    overlay = preview_region is not None
    run = yield from prepare_run(image, labels, config, model=model, voxel_size=voxel_size,
                                 mask=mask, boundary_reference=boundary_reference,
                                 resume=resume, overlay=overlay, region=preview_region,
                                 should_stop=should_stop)
    if resume is not None:
        restore_run(run, resume)
    _distribute(run)
    run.start = last_preview = time.perf_counter()
    step, stopped, warning = run.first, False, ""
    every = validation_every(run.cfg.iterations)
    with _threads(run.cfg.num_threads):
        for step in range(run.first, run.cfg.iterations):
            if should_stop is not None and should_stop():
                stopped = True
                break
            due = preview_region is not None and step > run.first and (
                time.perf_counter() - last_preview >= preview_every
                or (preview_now is not None and preview_now()))
            asked = preview_region() if due else None  # asked once: a request is consumed
            if get_labels is not None and (step % 10 == 0 or due):
                yield from _refresh_strokes(run, get_labels(), (lambda r=asked: r) if due
                                            else preview_region)
            if due:
                event = _preview(run, step, asked, should_stop)
                last_preview = time.perf_counter()
                if event is not None:
                    yield event
            value = _step(run, step)
            if math.isfinite(value):
                yield _record(run, step, value)
            elif warning := _bad_step(run):
                stopped = True
                break
            if run.validating and ((step + 1) % every == 0 or step + 1 == run.cfg.iterations):
                yield judge(run, step + 1)
        else:
            step = run.cfg.iterations
    return finish_run(run, step, stopped, warning)


def _several(image, labels, config, voxel_size, mask, boundary_reference):
    """``image`` as a list of (image, labels) pairs (``labels`` None): the canvas's image,
    strokes and voxel size, and the :class:`~.volumes.Canvas` (its notes and regions); else
    everything as it was, and None."""
    if labels is not None or not isinstance(image, (list, tuple)):
        return image, labels, voxel_size, None
    from .volumes import gather

    if mask is not None or boundary_reference is not None:
        raise VoxSegError("several volumes train without a mask or a boundary reference; "
                          "give one volume for those")
    cfg = config or TrainConfig()
    canvas = gather(image, voxel_size, task=cfg.task, percentiles=cfg.percentiles)
    return canvas.image, canvas.labels, canvas.voxel_size, canvas


def train(image, labels, config: TrainConfig | None = None, **kwargs) -> TrainResult:
    """Run :func:`iter_train` to the end."""
    return run_to_end(iter_train(image, labels, config, **kwargs))
