"""Losses for the three tasks, from one registry. Every loss ignores voxels that are not annotated.

Targets, as the training loop hands them over (see :mod:`.data`):

- ``multiclass``: int64 ``(N, Z, Y, X)``; 0 = not annotated, 1..K = classes. Logits ``(N, K, ...)``.
- ``multilabel``: int64 ``(N, K, Z, Y, X)``; per class 0 = not annotated, 1 = absent, 2 = present.
  Logits ``(N, K, ...)``, one sigmoid per class.
- ``regression``: float32 ``(N, 1, Z, Y, X)``; NaN = not known. Outputs ``(N, 1, ...)``.

Unannotated voxels get exactly zero gradient (they are masked before any reduction, never just
multiplied by a small number), and a batch with no annotated voxel gives a loss of exactly 0
that still has a graph, so ``backward`` works and no weight turns NaN.

On dense targets (every voxel annotated) each loss equals a reference: PyTorch's own loss where
there is one (``ce``, ``bce``, ``mse``, ``l1``), else MONAI's ``DiceLoss(batch=True)``,
``DiceCELoss(batch=True)`` and ``FocalLoss`` (the tests check this to 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import VoxSegError
from .targets import check_weights_allowed
from .tasks import DEFAULT_LOSS, TASKS, check_task  # noqa: F401  (TASKS: part of this API)

# How much the focal losses down-weight easy voxels: 0 is cross-entropy.
FOCAL_GAMMA_RANGE = (0.0, 10.0)
# MONAI's defaults, so that the Dice terms equal its DiceLoss.
_SMOOTH = 1e-5


def _zero(logits: torch.Tensor) -> torch.Tensor:
    """Exactly 0, with a graph: for batches without a single annotated voxel."""
    return logits.sum() * 0.0


class _Loss(torch.nn.Module):
    task = "multiclass"
    uses_voxel_weights = False  # needs a per-voxel weight map (the loop makes one)
    honours_voxel_weights = False  # weighs each voxel by the map it is given
    weight: torch.Tensor | None  # a buffer: the class weights

    def __init__(self, class_weights: Sequence[float] | np.ndarray | None = None):
        super().__init__()
        weight = None if class_weights is None else torch.as_tensor(class_weights,
                                                                   dtype=torch.float32)
        self.register_buffer("weight", weight)

    def _class_weight(self, count: int, like: torch.Tensor) -> torch.Tensor | None:
        if self.weight is None:
            return None
        if self.weight.numel() != count:
            raise VoxSegError(f"{self.weight.numel()} class weights for {count} classes; give "
                              "one weight per class")
        return self.weight.to(like)


# ---- multi-class (softmax) ----------------------------------------------------------------------


def _onehot(labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(one-hot of labels 1..K as float (N, K, ...), annotated mask as float (N, 1, ...))."""
    annotated = labels > 0
    index = (labels.long() - 1).clamp(min=0)
    onehot = F.one_hot(index, num_classes).movedim(-1, 1).float()
    mask = annotated.unsqueeze(1).float()
    return onehot * mask, mask


def _soft_dice(probs: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor,
               weight: torch.Tensor | None) -> torch.Tensor:
    """Batch soft Dice loss per class, as MONAI's DiceLoss(batch=True): mean over classes of
    ``w_c * (1 - (2 sum(p g) + s) / (sum(p) + sum(g) + s))``, sums over annotated voxels only."""
    probs = probs * mask
    axes = [0, *range(2, probs.ndim)]
    intersection = (probs * truth).sum(axes)
    denominator = probs.sum(axes) + truth.sum(axes)
    per_class = 1.0 - (2.0 * intersection + _SMOOTH) / (denominator + _SMOOTH)
    if weight is not None:
        per_class = per_class * weight
    return per_class.mean()


class MaskedCrossEntropy(_Loss):
    """Cross-entropy over annotated voxels, optionally weighted per class and per voxel.

    The weighted mean ``sum(w_class * w_voxel * ce) / sum(w_class * w_voxel)`` over annotated
    voxels; with class weights only it is PyTorch's weighted ``cross_entropy``.
    """

    honours_voxel_weights = True

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                voxel_weights: torch.Tensor | None = None) -> torch.Tensor:
        weight = self._class_weight(logits.shape[1], logits)
        target = labels.long() - 1  # class 1..K -> 0..K-1, "not annotated" 0 -> -1
        annotated = target >= 0
        per_voxel = annotated.float()
        if weight is not None:
            per_voxel = per_voxel * weight[target.clamp(min=0)]
        if voxel_weights is not None:
            per_voxel = per_voxel * voxel_weights.to(per_voxel)
        used = annotated & (per_voxel > 0)
        if not bool(used.any()):
            return _zero(logits)
        if voxel_weights is None:
            return F.cross_entropy(logits.float(), target.masked_fill(~used, -1),
                                   weight=weight, ignore_index=-1)
        ce = F.cross_entropy(logits.float(), target.masked_fill(~used, -1), ignore_index=-1,
                             reduction="none")
        per_voxel = per_voxel * used
        return (ce * per_voxel).sum() / per_voxel.sum()


class BoundaryCrossEntropy(MaskedCrossEntropy):
    """Cross-entropy with a per-voxel weight map that is high near class boundaries
    (:func:`boundary_weight_map`), as in the U-Net paper; the loop supplies the map."""

    uses_voxel_weights = True


class SoftmaxDice(_Loss):
    """Soft Dice over annotated voxels (MONAI ``DiceLoss(softmax=True, batch=True)``)."""

    def forward(self, logits, labels, voxel_weights=None):
        truth, mask = _onehot(labels, logits.shape[1])
        if not bool(mask.any()):
            return _zero(logits)
        probs = torch.softmax(logits.float(), dim=1)
        return _soft_dice(probs, truth, mask, self._class_weight(logits.shape[1], logits))


class _Sum(_Loss):
    """The sum of the losses in ``parts``, each built with the same class weights."""

    parts: tuple = ()

    def __init__(self, class_weights=None):
        super().__init__(class_weights)
        self.terms = torch.nn.ModuleList(part(class_weights) for part in self.parts)

    def forward(self, logits, labels, voxel_weights=None):
        return sum(term(logits, labels) for term in self.terms)


class SoftmaxDiceCE(_Sum):
    """Dice + cross-entropy (MONAI ``DiceCELoss(softmax=True, batch=True)``)."""

    parts = (SoftmaxDice, MaskedCrossEntropy)


class SoftmaxFocal(_Loss):
    """Focal loss ``-w_y (1 - p_y)^gamma log p_y``, mean over annotated voxels (MONAI
    ``FocalLoss(use_softmax=True)`` with the ignore mask; gamma 0 is cross-entropy)."""

    def __init__(self, class_weights=None, gamma: float = 2.0):
        super().__init__(class_weights)
        self.gamma = float(gamma)

    def forward(self, logits, labels, voxel_weights=None):
        truth, mask = _onehot(labels, logits.shape[1])
        count = mask.sum()
        if not bool(count > 0):
            return _zero(logits)
        log_p = torch.log_softmax(logits.float(), dim=1)
        loss = -(1 - log_p.exp()).pow(self.gamma) * log_p * truth
        weight = self._class_weight(logits.shape[1], logits)
        if weight is not None:
            loss = loss * weight.view(1, -1, *[1] * (loss.ndim - 2))
        return loss.sum() / count


# ---- multi-label (one sigmoid per class) --------------------------------------------------------


def _binary(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(present as float, annotated mask as float) from 0/1/2 multi-label targets."""
    return (labels == 2).float(), (labels > 0).float()


class MaskedBCE(_Loss):
    """Binary cross-entropy per class over annotated voxels; class weights are PyTorch's
    ``pos_weight`` (how much more a 'present' voxel counts than an 'absent' one). Voxel
    weights (N, K, Z, Y, X), each class's own, or (N, Z, Y, X): the weighted mean
    ``sum(w_voxel * bce) / sum(w_voxel)`` over annotated voxels."""

    task = "multilabel"
    honours_voxel_weights = True

    def forward(self, logits, labels, voxel_weights=None):
        truth, mask = _binary(labels)
        if voxel_weights is not None:
            weights = voxel_weights.to(mask)
            mask = mask * (weights if weights.ndim == mask.ndim else weights.unsqueeze(1))
        count = mask.sum()
        if not bool(count > 0):
            return _zero(logits)
        weight = self._class_weight(logits.shape[1], logits)
        pos_weight = None if weight is None else weight.view(-1, *[1] * (logits.ndim - 2))
        loss = F.binary_cross_entropy_with_logits(logits.float(), truth, pos_weight=pos_weight,
                                                  reduction="none")
        return (loss * mask).sum() / count


class SigmoidDice(_Loss):
    """Soft Dice per class on sigmoid outputs (MONAI ``DiceLoss(sigmoid=True, batch=True)``)."""

    task = "multilabel"

    def forward(self, logits, labels, voxel_weights=None):
        truth, mask = _binary(labels)
        if not bool(mask.any()):
            return _zero(logits)
        probs = torch.sigmoid(logits.float())
        return _soft_dice(probs, truth * mask, mask,
                          self._class_weight(logits.shape[1], logits))


class SigmoidDiceBCE(_Sum):
    """Dice + BCE for overlapping classes."""

    task = "multilabel"
    parts = (SigmoidDice, MaskedBCE)


class SigmoidFocal(_Loss):
    """Focal loss per class on sigmoid outputs (MONAI ``FocalLoss``, class weights as its
    per-class ``alpha``: they scale the 'present' voxels), mean over annotated voxels."""

    task = "multilabel"

    def __init__(self, class_weights=None, gamma: float = 2.0):
        super().__init__(class_weights)
        self.gamma = float(gamma)

    def forward(self, logits, labels, voxel_weights=None):
        truth, mask = _binary(labels)
        count = mask.sum()
        if not bool(count > 0):
            return _zero(logits)
        x = logits.float()
        bce = x - x * truth - F.logsigmoid(x)
        loss = (F.logsigmoid(-x * (truth * 2 - 1)) * self.gamma).exp() * bce
        weight = self._class_weight(logits.shape[1], logits)
        if weight is not None:
            weight = weight.view(1, -1, *[1] * (loss.ndim - 2))
            loss = torch.where(truth == 1, weight, torch.ones_like(weight)) * loss
        return (loss * mask).sum() / count


# ---- regression ---------------------------------------------------------------------------------


class _Regression(_Loss):
    task = "regression"
    reduce: Callable[[torch.Tensor], torch.Tensor]  # the subclass's, of the differences

    def forward(self, outputs, target, voxel_weights=None):
        known = torch.isfinite(target)
        if not bool(known.any()):
            return _zero(outputs)
        diff = outputs.float()[known] - target[known].float()
        return self.reduce(diff)


class MaskedMSE(_Regression):
    """Mean squared error where the target is known (PyTorch ``mse_loss`` on dense targets)."""

    @staticmethod
    def reduce(diff):
        return (diff * diff).mean()


class MaskedL1(_Regression):
    """Mean absolute error where the target is known (PyTorch ``l1_loss`` on dense targets)."""

    @staticmethod
    def reduce(diff):
        return diff.abs().mean()


# ---- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossInfo:
    factory: type[_Loss]
    task: str
    description: str
    gamma: bool = False  # takes focal_gamma


LOSSES: dict[str, LossInfo] = {
    "ce": LossInfo(MaskedCrossEntropy, "multiclass",
                   "cross-entropy (weighted cross-entropy with class weights)"),
    "dice": LossInfo(SoftmaxDice, "multiclass", "soft Dice"),
    "dice_ce": LossInfo(SoftmaxDiceCE, "multiclass", "soft Dice + cross-entropy"),
    "focal": LossInfo(SoftmaxFocal, "multiclass", "focal loss (focal_gamma)", gamma=True),
    "boundary_ce": LossInfo(BoundaryCrossEntropy, "multiclass",
                            "cross-entropy weighted up near class boundaries"),
    "bce": LossInfo(MaskedBCE, "multilabel",
                    "binary cross-entropy per class (class weights = positive weights)"),
    "dice_bce": LossInfo(SigmoidDiceBCE, "multilabel", "soft Dice + binary cross-entropy"),
    "dice_ml": LossInfo(SigmoidDice, "multilabel", "soft Dice per class"),
    "focal_ml": LossInfo(SigmoidFocal, "multilabel", "focal loss per class (focal_gamma)",
                         gamma=True),
    "mse": LossInfo(MaskedMSE, "regression", "mean squared error"),
    "l1": LossInfo(MaskedL1, "regression", "mean absolute error"),
}
# What a user types and what it means depends on the task: "dice" and "focal" on a
# multi-label task are the sigmoid versions.
_ALIASES = {("multilabel", "dice"): "dice_ml", ("multilabel", "focal"): "focal_ml"}


def losses_for(task: str) -> list[str]:
    """The loss names a user may choose for ``task`` (multi-label Dice/focal by short names)."""
    check_task(task)
    short = {v: k[1] for k, v in _ALIASES.items() if k[0] == task}
    return [short.get(name, name) for name, info in LOSSES.items()
            if info.task == task]


def short_name(key: str) -> str:
    """The name a user types for the registry key ``key`` (``dice_ml`` -> ``dice``)."""
    return {v: k[1] for k, v in _ALIASES.items()}.get(key, key)


def weighable_losses() -> list[str]:
    """The losses that weigh each voxel by a given map (e.g. pseudo-labels below strokes)."""
    return [name for name, info in LOSSES.items() if info.factory.honours_voxel_weights]


def check_focal_gamma(value) -> float:
    """The focal gamma as a float, or :class:`VoxSegError` when it is not in range."""
    low, high = FOCAL_GAMMA_RANGE
    try:
        gamma = float(value)
    except (TypeError, ValueError):
        gamma = float("nan")
    if isinstance(value, bool) or not low <= gamma <= high:
        raise VoxSegError(f"focal gamma = {value!r}; give a number from {low:g} to {high:g}, "
                          "e.g. 2")
    return gamma


def resolve_loss(name: str | None, task: str) -> str:
    """The registry key for the loss ``name`` on ``task`` (None = the task's default)."""
    check_task(task)
    if name is None or name == "":
        return DEFAULT_LOSS[task]
    key = _ALIASES.get((task, name), name)
    info = LOSSES.get(key)
    if info is None:
        raise VoxSegError(f"unknown loss {name!r}; for a {task} task choose one of "
                          f"{', '.join(losses_for(task))}")
    if info.task != task:
        raise VoxSegError(f"loss {name!r} is for {info.task} tasks, not {task}; for {task} "
                          f"choose one of {', '.join(losses_for(task))}")
    return key


def build_loss(name: str | None = None,
               class_weights: Sequence[float] | np.ndarray | None = None, *,
               task: str = "multiclass", focal_gamma: float = 2.0) -> torch.nn.Module:
    """The loss ``name`` for ``task``, with optional per-class weights (and focal gamma)."""
    key = resolve_loss(name, task)
    info = LOSSES[key]
    if class_weights is not None:
        check_weights_allowed([float(w) for w in class_weights], task)
    options: dict[str, Any] = {"class_weights": class_weights}
    if info.gamma:  # the focal losses
        options["gamma"] = check_focal_gamma(focal_gamma)
    return info.factory(**options)
