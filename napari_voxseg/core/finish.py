"""The end of a training run (:mod:`.train`): the best weights or, with two stages, stage 1
where the network never beat it; the model card (config.json's contents); the resume state of
a run stopped by the user."""

from __future__ import annotations

import copy
import math
import platform
import time
from dataclasses import asdict
from typing import Any, cast

import numpy as np
import torch

from .. import __version__
from . import distributed
from .card import ModelCard
from .config import TrainConfig
from .events import ResumeState, TrainResult
from .judge import network_chosen
from .losses import LOSSES, short_name
from .models import UNet3D, attach
from .run import Run
from .two_stage import final_stage, stage_device


def _versions() -> dict:
    return {"napari_voxseg": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _loss_record(cfg: TrainConfig) -> dict:
    """The loss and the settings it used, for config.json."""
    assert cfg.loss is not None  # checked() resolves it
    record: dict[str, Any] = {"name": short_name(cfg.loss)}
    if LOSSES[cfg.loss].gamma:
        record["focal_gamma"] = cfg.focal_gamma
    if LOSSES[cfg.loss].factory.uses_voxel_weights:
        record.update(boundary_weight=cfg.boundary_weight, boundary_sigma=cfg.boundary_sigma)
    return record


def _card(run: Run, steps_done: int) -> ModelCard:
    cfg, history = run.cfg, run.history
    training = {
        **{k: v for k, v in asdict(cfg).items() if k not in ("class_names", "device")
           and (k != "two_stage" or v)},  # one-stage models' cards stay as they were
        "class_weights": None if run.weights is None else [float(w) for w in run.weights],
        "stroke_counts": run.target.counts(),
        "steps_done": run.previous_steps + steps_done,
        "best_step": run.previous_steps + run.best_step,
        "best_loss": None if not math.isfinite(run.best_loss) else float(run.best_loss),
        "history": run.old_history + [list(h) for h in history[:: max(1, len(history) // 200)]],
        "device": str(run.device),
        "world_size": distributed.world()[1],
    }
    assert cfg.patch_size is not None  # planned
    stage1 = None
    if run.stage is not None:
        assert run.stage.final is not None  # finish_run fits it first (final_stage)
        stage1 = run.stage.final.metadata()
        chosen = network_chosen(run)
        training["validation"] = {
            "held_out_voxels": 0 if run.stage.held_out is None else
            int(np.count_nonzero(run.stage.held_out)),
            "stage1": None if run.stage.score is None else list(run.stage.score),
            "network": None if run.best_score is None else list(run.best_score),
            "kept": "network" if chosen else "stage 1"}
    return ModelCard(
        architecture=run.arch, task=cfg.task, loss=_loss_record(cfg),
        classes=[{"id": i + 1, "name": str(n)} for i, n in enumerate(run.names)],
        target_scale=run.target.scale_record,
        normalization={"method": "percentile", "low": cfg.percentiles[0],
                       "high": cfg.percentiles[1]},
        patch_size=list(cfg.patch_size),
        voxel_size=None if run.voxel_size is None else [float(v) for v in run.voxel_size],
        training=training, versions=_versions(),
        stage1=stage1)


def _snapshot(run: Run, steps_done: int) -> ResumeState:
    return ResumeState(
        config=run.cfg, step=steps_done,
        optimizer_state=copy.deepcopy(run.optimizer.state_dict()),
        model_state={k: v.detach().clone() for k, v in run.model.state_dict().items()},
        sampler_state=copy.deepcopy(run.sampler.rng.bit_generator.state),
        smoothed=run.smoothed, best_state=run.best_state, best_loss=run.best_loss,
        best_step=run.best_step, best_score=run.best_score, previous_steps=run.previous_steps,
        history=list(run.history), old_history=run.old_history, skipped=run.skipped)


def finish_run(run: Run, steps_done: int, stopped: bool, warning: str) -> TrainResult:
    """The best model with its card; a resume state when stopped by the user. Two stages:
    stage 1 fitted on all the strokes, and the network's head zeroed (so that the model
    predicts what stage 1 does) when it never beat stage 1 on the held-out strokes."""
    resume = _snapshot(run, steps_done) if stopped and not warning else None
    if run.stage is not None:
        final_stage(run.stage, run.image, run.target.data, run.target.num_outputs,
                    run.voxel_size, seed=run.cfg.seed, device=stage_device(run.device))
    if run.stage is not None and not network_chosen(run):
        head = cast(UNet3D, run.model).head  # a U-Net (build_model's; UNet2D is one too)
        assert head.bias is not None  # made with one
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
        run.best_step, run.best_loss = 0, run.smoothed if run.smoothed is not None else \
            math.nan
    elif run.best_state is not None:
        run.model.load_state_dict(run.best_state)
    else:
        run.best_loss = run.smoothed if run.smoothed is not None else math.nan
        run.best_step = steps_done
    run.model.eval()
    attach(run.model, config=_card(run, steps_done).to_dict())
    if run.stage is not None:
        attach(run.model, stage1=run.stage.final)
    return TrainResult(model=run.model, history=run.history, stopped=stopped, steps=steps_done,
                       best_step=run.best_step, best_loss=run.best_loss,
                       elapsed=time.perf_counter() - run.start, skipped_steps=run.skipped,
                       warning=warning, resume=resume, adjustments=run.adjustments)
