"""A training run's state (:class:`Run`) and its first phase: :func:`prepare_run` checks
every input and builds the target, the network, the loss, the sampler and the optimizer;
:func:`restore_run` puts a stopped run back where it was. The loop is in :mod:`.train`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .boundary import boundary_weight_map
from .card import image_channels
from .config import TrainConfig, adopt_model, plan_config
from .data import check_image, normalize
from .device import inference_dtype, resolve_device
from .errors import VoxSegError
from .events import PreviewEvent, ResumeState
from .infer import PredictResult
from .losses import build_loss
from .models import architecture_from, build_model
from .sampling import PatchSampler
from .targets import Target, check_labels, class_weights, prepare_target
from .tasks import task_of
from .two_stage import (
    RunStage,
    iter_fit_stage,
    network_input,
    stage_device,
    stage_labels,
    training_labels,
)


@dataclass
class Run:
    """Everything one training run works with and on."""

    cfg: TrainConfig
    labels: object  # as given (regression: the target, whose mask may change)
    target: Target
    normalized: np.ndarray
    arch: dict
    names: list
    weights: np.ndarray | None
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    device: torch.device
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler
    optimizer: torch.optim.Optimizer
    sampler: PatchSampler
    voxel_size: tuple | None
    boundary: np.ndarray | None  # boundary_ce's voxel weights
    boundary_map: Callable | None  # strokes -> those weights, when they follow the strokes
    forward: torch.nn.Module | None = None  # the model as the step runs it (DDP under torchrun)
    stage: RunStage | None = None  # two stages: stage 1, its probabilities and pseudo-labels
    image: np.ndarray | None = None  # the checked (C, Z, Y, X) image (stage 1 refits on it)
    previous_steps: int = 0  # steps of earlier runs (fine-tuning, continuing)
    old_history: list = field(default_factory=list)
    first: int = 0  # the step this run starts at (a continued run: where it stopped)
    history: list = field(default_factory=list)  # (step, loss)
    smoothed: float | None = None
    best_state: dict | None = None
    best_loss: float = math.inf
    best_step: int = -1
    best_score: tuple | None = None  # two stages: the kept network's score on held-out strokes
    bad_in_a_row: int = 0
    skipped: int = 0
    adjustments: list = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    @property
    def task(self) -> str:
        return self.cfg.task

    @property
    def validating(self) -> bool:
        """Two stages with held-out strokes: the network is judged against stage 1 on them."""
        return self.stage is not None and self.stage.held_out is not None

    def set_stage(self, stage: RunStage) -> None:
        """A refitted stage 1: its probabilities become the network's input channels (in the
        sampler's copy too) and its confident voxels the pseudo-labels."""
        self.stage = stage
        channels = self.normalized.shape[0] - stage.probabilities.shape[0]
        self.normalized[channels:] = stage.probabilities
        image = self.sampler.image
        if image is not self.normalized:  # padded for a small volume
            image[(slice(channels, None), *map(slice, stage.probabilities.shape[1:]))] = \
                stage.probabilities


def stage_previews(fitting, run_start: float, total: int, annotated: int, task: str):
    """Run stage 1's fitting generator, yielding a :class:`PreviewEvent` (stage 1, of the
    whole volume or of the region in view) for each overlay it makes ready; returns its
    :class:`RunStage`."""
    began = time.perf_counter()
    while True:
        try:
            probs, region = next(fitting)
        except StopIteration as done:
            return done.value
        now = time.perf_counter()
        region = region or tuple(slice(0, n) for n in probs.shape[1:])
        yield PreviewEvent(step=0, total=total, region=region,
                           result=PredictResult(labels=stage_labels(probs, task), task=task),
                           annotated=annotated, elapsed=now - run_start,
                           seconds=now - began, stage=1)
        began = now


# ---- prepare the run -----------------------------------------------------------------------
def _check_voxel_size(voxel_size) -> tuple | None:
    if voxel_size is None:
        return None
    voxel_size = tuple(voxel_size)
    if len(voxel_size) != 3 or not all(
            isinstance(v, (int, float, np.number)) and math.isfinite(v) and v > 0
            for v in voxel_size):
        raise VoxSegError(f"voxel size {voxel_size} must be 3 positive numbers (Z, Y, X)")
    return voxel_size


def _check_model_fits(model, task: str, labels, num_classes: int | None,
                      two_stage: bool = False) -> int | None:
    """A model trained further must do the same task with as many classes, and have two
    stages if asked for; its class count."""
    if model is None:
        return None
    if two_stage and not model.config.get("stage1"):
        raise VoxSegError("the loaded model has one stage and cannot be trained further with "
                          "two stages; turn two_stage off, or train a new model")
    model_task = task_of(model.config)
    if model_task != task:
        raise VoxSegError(f"the loaded model does a {model_task} task, not {task}; choose "
                          f"task {model_task} or train a new model")
    known = model.config["architecture"]["num_classes"]
    if task == "multiclass" and not num_classes:
        strokes = np.asarray(labels)
        top = int(strokes.max()) if strokes.dtype.kind in "iu" and strokes.size else 0
        if top > known:
            raise VoxSegError(f"the strokes use class {top} but the model being trained further "
                              f"has {known} classes; erase the strokes of classes above "
                              f"{known}, or train a new model")
    return known


def _boundary(cfg: TrainConfig, loss_fn, reference, strokes, voxel_size):
    """For boundary_ce: the voxel weights near class boundaries, and how to recompute them
    from newer strokes (None when they come from a fixed ``reference``, e.g. a prediction);
    (None, None) for other losses."""
    if not loss_fn.uses_voxel_weights:
        return None, None

    def weights(labels):
        return boundary_weight_map(labels, w0=cfg.boundary_weight, sigma=cfg.boundary_sigma,
                                   voxel_size=voxel_size)

    if reference is None:
        return weights(strokes), weights
    reference, _ = check_labels(reference, strokes.shape[-3:], name="boundary reference")
    return weights(reference), None


def _network(cfg: TrainConfig, model, layout: dict, channels: int, outputs: int,
             prior: int = 0):
    """A new network for ``cfg`` (seeded), or the one being trained further. ``prior``: how
    many of the ``channels`` are a first stage's probabilities (the last ones)."""
    if model is None:
        arch = architecture_from(in_channels=channels, num_classes=outputs,
                                 base_channels=cfg.base_channels, depth=cfg.depth,
                                 prior_channels=prior, **layout,
                                 prior_link="logit" if cfg.task == "multilabel" else "log")
        torch.manual_seed(cfg.seed)
        return build_model(arch), arch
    return model, dict(model.config["architecture"])


def _class_names(cfg: TrainConfig, count: int) -> list[str]:
    names = list(cfg.class_names or [])[:count]
    if cfg.task == "regression":
        names = names or ["value"]
    return names + [f"class {i}" for i in range(len(names) + 1, count + 1)]


def prepare_run(image, labels, config, *, model, voxel_size, mask, boundary_reference,
                resume, overlay: bool = False, region=None, should_stop=None):
    """Check everything and build what the loop needs; :class:`VoxSegError` before any work.
    A generator that returns the :class:`Run`: with two stages and ``overlay``, it yields
    stage 1's first overlays (:class:`PreviewEvent`) while stage 1 fits; ``region()``: the
    region in view, which the first overlay of a large volume covers first. ``should_stop``:
    polled while stage 1 fits; true raises :class:`StoppedEarly` (nothing was made)."""
    began = time.perf_counter()
    if resume is not None:
        if model is None:
            raise VoxSegError("to continue a run, pass the model it returned as well")
        config = resume.config
    elif model is not None:
        config = adopt_model(config or TrainConfig(), model)
    cfg = (config or TrainConfig()).checked()
    voxel_size = _check_voxel_size(voxel_size)
    known = _check_model_fits(model, cfg.task, labels, cfg.num_classes, bool(cfg.two_stage))
    image = check_image(image, keep_integers=True, channels=None if model is None else
                        image_channels(model.config))
    cfg, layout = plan_config(cfg, image.shape[1:], voxel_size, architecture=None
                              if model is None else model.config["architecture"])
    assert cfg.patch_size is not None  # planned
    target = prepare_target(cfg.task, labels, image.shape[1:], mask=mask,
                            num_classes=cfg.num_classes or known, names=cfg.class_names)
    if known is not None and target.num_outputs != known:
        raise VoxSegError(f"the loaded model has {known} classes but {target.num_outputs} "
                          f"were asked for; use class count {known} or train a new model")
    weights = class_weights(cfg.class_weights, target.data, target.num_outputs, task=cfg.task)
    loss_fn = build_loss(cfg.loss, class_weights=weights, task=cfg.task,
                         focal_gamma=cfg.focal_gamma)
    boundary, boundary_map = _boundary(cfg, loss_fn, boundary_reference, target.data,
                                       voxel_size)
    training = (model.config.get("training", {}) if model is not None else {})
    device = resolve_device(cfg.device)
    stage = None
    if cfg.two_stage:
        stage = yield from stage_previews(
            iter_fit_stage(image, target.data, target.num_outputs, voxel_size, seed=cfg.seed,
                           overlay=overlay, region=region, device=stage_device(device),
                           should_stop=should_stop),
            began, cfg.iterations, target.annotated, cfg.task)
    prior = target.num_outputs if stage else 0
    model, arch = _network(cfg, model, layout, image.shape[0] + prior, target.num_outputs,
                           prior)
    normalized = network_input(normalize(image, *cfg.percentiles), stage)
    drawn, voxel_weights, strata = training_labels(stage, target.data, boundary, target.strata)
    sampler = PatchSampler(normalized, drawn, cfg.patch_size, strata=strata,
                           voxel_weights=voxel_weights, fill=target.fill, seed=cfg.seed,
                           intensity_channels=image.shape[0])
    model.to(device).train()
    amp = inference_dtype(device, cfg.precision, cfg.task)
    if amp == torch.bfloat16 and cfg.patch_size[0] == 1 and arch["name"] != "unet2d":
        # PyTorch 2.13's CPU bfloat16 Conv3d backward crashes (segfault) on inputs one slice
        # deep; such patches (a 3D network forced onto a one-slice stack) train in float32.
        amp = None
    return Run(
        cfg=cfg, labels=labels, target=target, normalized=normalized, arch=arch,
        names=_class_names(cfg, target.num_outputs), weights=weights, model=model,
        loss_fn=loss_fn.to(device), device=device, amp=amp,
        scaler=torch.amp.GradScaler("cuda", enabled=amp == torch.float16),
        optimizer=torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                                    weight_decay=cfg.weight_decay),
        sampler=sampler, voxel_size=voxel_size, boundary=boundary, boundary_map=boundary_map,
        stage=stage, image=image, start=began,
        previous_steps=int(training.get("steps_done", 0)),
        old_history=list(training.get("history", [])))


def restore_run(run: Run, resume: ResumeState) -> None:
    """Continue a stopped run where it was: weights, optimizer, patch sequence, bookkeeping."""
    run.model.load_state_dict(resume.model_state)
    run.optimizer.load_state_dict(resume.optimizer_state)
    run.sampler.rng.bit_generator.state = resume.sampler_state
    run.first, run.previous_steps, run.old_history = resume.step, resume.previous_steps, \
        resume.old_history
    run.history, run.smoothed, run.skipped = list(resume.history), resume.smoothed, \
        resume.skipped
    run.best_state, run.best_loss, run.best_step = resume.best_state, resume.best_loss, \
        resume.best_step
    run.best_score = resume.best_score
