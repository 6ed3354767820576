"""What training yields and returns: :class:`TrainEvent` per step, :class:`PreviewEvent` for a
live preview, and :class:`TrainResult` at the end, with :class:`ResumeState` to continue a
stopped run exactly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .config import TrainConfig

if TYPE_CHECKING:
    from .infer import PredictResult


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
    """A prediction of part of the volume by the network as it is at ``step`` (live preview),
    or (``stage`` 1) by stage 1 of a two-stage run: its first overlay, and stage 1's again
    after new strokes or where the U-Net does not beat it on the held-out strokes.

    ``region``: three slices (Z, Y, X) of the volume; ``result``: a PredictResult of the
    region's shape (labels, per-class labels or values by task)."""

    step: int
    total: int
    region: tuple[slice, slice, slice]
    result: PredictResult
    annotated: int
    elapsed: float
    seconds: float  # how long the preview took
    stage: int = 2  # 1: stage 1's prediction; 2: the network's


@dataclass
class ValidationEvent:
    """Two stages: the network and stage 1 judged on the held-out strokes at ``step``:
    (mean Dice, mean probability of the painted class) each; ``chosen`` is what the model
    would be if training ended now ("U-Net" from ``best_step``, or "stage 1")."""

    step: int
    total: int
    network: tuple[float, float]
    stage1: tuple[float, float]
    chosen: str
    best_step: int
    held_out: int  # held-out stroke voxels


@dataclass
class ResumeState:
    """Where a stopped run was, to continue it exactly (``iter_train(..., resume=state)``)."""

    config: TrainConfig
    step: int  # steps of config.iterations done
    model_state: dict  # the weights after the last step (the result's model holds the best)
    optimizer_state: dict
    sampler_state: Mapping[str, Any]  # the sampler's bit generator's state
    smoothed: float | None
    best_state: dict | None
    best_loss: float
    best_step: int
    best_score: tuple | None
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


