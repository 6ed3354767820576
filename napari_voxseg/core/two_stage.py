"""The two-stage engine (opt-in: ``TrainConfig(two_stage=True)``, multi-class only): stage 1
(:mod:`.stage1`, a per-voxel classifier on the filter bank) is fitted on the strokes, and the
U-Net gets its class probabilities as extra input channels (the normalized image first, then
the K probabilities) and learns from the strokes plus stage 1's confident voxels as
pseudo-labels, weighted below the strokes.

Training: :func:`fit_run_stage` (in :func:`~.run.prepare_run`) and :func:`training_labels`
(what the patch sampler draws: strokes first, pseudo-labels where nothing is painted, and the
per-voxel weights the loss gets). Prediction (:func:`~.infer.iter_predict`, and block-wise
:mod:`.blocks`) computes stage 1's probabilities of each block from the image, with their halo.
Saved models keep stage 1 in ``stage1.safetensors`` beside the weights (:mod:`.checkpoint`);
``model.stage1`` is the :class:`~.stage1.Stage1`, ``config["stage1"]`` its settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import VoxSegError
from .losses import weighable_losses

PSEUDO_THRESHOLD = 0.8  # stage-1 probability from which an unpainted voxel is a pseudo-label
PSEUDO_WEIGHT = 0.3  # a pseudo-label's weight in the loss; a stroke weighs 1


def check_two_stage(two_stage, task: str, loss: str) -> None:
    """:class:`VoxSegError` (one line) for a two-stage setting that cannot be honoured."""
    if not isinstance(two_stage, bool):
        raise VoxSegError(f"two_stage = {two_stage!r}; give True or False")
    if not two_stage:
        return
    if task != "multiclass":
        raise VoxSegError(f"two_stage is for the multiclass task only, not {task}; turn "
                          "two_stage off")
    weighable = weighable_losses()
    if loss not in weighable:
        raise VoxSegError(f"two_stage weighs pseudo-labels below strokes, which loss {loss!r} "
                          f"cannot do; choose loss {' or '.join(weighable)}, or turn two_stage "
                          "off")


@dataclass
class RunStage:
    """Stage 1 in a training run: the classifier, its probabilities over the whole volume and
    its pseudo-labels (0 where not confident)."""

    model: object  # stage1.Stage1
    probabilities: np.ndarray  # (K, Z, Y, X) float32
    pseudo: np.ndarray  # (Z, Y, X) uint8, 1..K where stage 1 is confident


def fit_run_stage(image: np.ndarray, strokes: np.ndarray, num_classes: int, voxel_size,
                  *, seed: int = 0) -> RunStage:
    """Fit stage 1 on the strokes and predict the whole (C, Z, Y, X) image with it."""
    from .stage1 import fit_stage1

    model = fit_stage1(image, strokes, voxel_size, seed=seed, num_classes=num_classes)
    probs = model.predict_proba(image)
    return RunStage(model, probs, pseudo_labels(probs))


def pseudo_labels(probabilities: np.ndarray, threshold: float = PSEUDO_THRESHOLD) -> np.ndarray:
    """Class 1..K where the highest probability is at least ``threshold``, else 0."""
    confident = probabilities.max(axis=0) >= threshold
    return np.where(confident, probabilities.argmax(axis=0) + 1, 0).astype(np.uint8)


def training_labels(stage: RunStage | None, strokes: np.ndarray,
                    boundary: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """What the sampler draws from: (labels, per-voxel weights). One stage: the strokes and the
    boundary weights as they are. Two: the strokes (weight 1) and, where nothing is painted,
    the pseudo-labels (weight :data:`PSEUDO_WEIGHT`), times the boundary weights when given.
    New arrays: the strokes are never modified."""
    if stage is None:
        return strokes, boundary
    painted = strokes > 0
    labels = np.where(painted, strokes, stage.pseudo).astype(strokes.dtype, copy=False)
    weights = np.where(painted, np.float32(1.0),
                       np.where(stage.pseudo > 0, np.float32(PSEUDO_WEIGHT), np.float32(0.0)))
    if boundary is not None:
        weights = weights * boundary
    return labels, weights.astype(np.float32, copy=False)


def network_input(normalized: np.ndarray, stage: RunStage | None) -> np.ndarray:
    """The network's input in training: the normalized image, then stage 1's probabilities."""
    if stage is None:
        return normalized
    return np.concatenate([normalized, stage.probabilities.astype(np.float32)], axis=0)
