"""The two-stage engine (the default for multi-class with a loss that weighs voxels; see
:func:`resolve_two_stage`): stage 1 (:mod:`.stage1`, a per-voxel classifier on the filter
bank) is fitted on the strokes, and the U-Net gets its class probabilities as extra input
channels (the normalized image first, then the K probabilities) and learns from the strokes
plus stage 1's confident voxels as pseudo-labels, weighted below the strokes. Some strokes are
held out (:mod:`.validation`); the U-Net's weights are kept only when it beats stage 1 on
them, else the saved model predicts what stage 1 does.

Training: :func:`iter_fit_stage` (in :func:`~.run.prepare_run`, and again on new strokes)
and :func:`training_labels` (what the patch sampler draws: strokes first, pseudo-labels where
nothing is painted, and the per-voxel weights the loss gets). Prediction
(:func:`~.infer.iter_predict`, and block-wise :mod:`.blocks`) computes stage 1's
probabilities of each block from the image, with their halo.
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


def resolve_two_stage(two_stage, task: str, loss: str) -> bool:
    """Whether a run has two stages: ``two_stage`` when True or False; None (auto) means yes
    for multi-class with a loss that weighs voxels (ce, weighted or not; boundary_ce), else no.
    Multi-label and regression train one stage: stage 1 classifies each voxel into one of K
    classes, which overlapping classes and continuous targets are not. :class:`VoxSegError`
    (one line) for a two-stage setting that cannot be honoured."""
    weighable = weighable_losses()
    if two_stage is None:
        return task == "multiclass" and loss in weighable
    if not isinstance(two_stage, bool):
        raise VoxSegError(f"two_stage = {two_stage!r}; give True, False or None (auto)")
    if not two_stage:
        return False
    if task != "multiclass":
        raise VoxSegError(f"two_stage is for the multiclass task only, not {task}; turn "
                          "two_stage off")
    if loss not in weighable:
        raise VoxSegError(f"two_stage weighs pseudo-labels below strokes, which loss {loss!r} "
                          f"cannot do; choose loss {' or '.join(weighable)}, or turn two_stage "
                          "off")
    return True


@dataclass
class RunStage:
    """Stage 1 in a training run. ``model`` is fitted on the training strokes (all of them, or
    all but the held-out ones): its probabilities are the U-Net's input and its confident
    voxels (``pseudo``) its pseudo-labels. ``held_out``: the strokes held out to judge the
    U-Net against stage 1 (:mod:`.validation`), None when too few were painted; ``score``:
    stage 1's on them. ``final``: stage 1 fitted on all the strokes, what is saved (None
    until fitted: :func:`final_stage`). ``overlay``: the probabilities last shown."""

    model: object  # stage1.Stage1
    probabilities: np.ndarray  # (K, Z, Y, X) float32
    pseudo: np.ndarray  # (Z, Y, X) uint8, 1..K where stage 1 is confident
    held_out: np.ndarray | None = None
    score: tuple[float, float] | None = None
    final: object | None = None
    overlay: np.ndarray | None = None


def iter_fit_stage(image: np.ndarray, strokes: np.ndarray, num_classes: int, voxel_size, *,
                   seed: int = 0, overlay: bool = False, held="split"):
    """Fit stage 1 for a run on the (C, Z, Y, X) image and its strokes (Z, Y, X); a generator
    that returns the :class:`RunStage`. ``held``: "split" to hold strokes out afresh, else
    the held-out strokes to keep (or None). With ``overlay`` it yields stage 1's probabilities
    (K, Z, Y, X) as they become ready, to be shown: first the forest's alone (about a second)
    on all the strokes, then, when nothing is held out, the whole stage 1's."""
    from .stage1 import fit_stage1, quick_overlay
    from .validation import score, split_strokes

    if isinstance(held, str):
        train, held = split_strokes(strokes, seed)
    else:
        train = strokes if held is None else np.where(held > 0, 0, strokes).astype(
            strokes.dtype, copy=False)
    shown = None
    if overlay:
        shown = quick_overlay(image, strokes, voxel_size, seed=seed, num_classes=num_classes)
        yield shown
    model = fit_stage1(image, train, voxel_size, seed=seed, num_classes=num_classes)
    if held is not None:
        model.forest_weight = choose_forest_weight(model, image, held)
    probs = model.predict_proba(image)
    stage = RunStage(model, probs, pseudo_labels(probs), held_out=held, overlay=shown)
    if held is None:
        stage.final = model
        if overlay:
            stage.overlay = probs
            yield probs
    else:
        stage.score = score(probs.argmax(axis=0) + 1, held, probs)
    return stage


def final_stage(stage: RunStage, image, strokes, num_classes: int, voxel_size, *,
                seed: int = 0):
    """Stage 1 on all the strokes, for the saved model (fitted now if strokes were held
    out)."""
    from .stage1 import fit_stage1

    if stage.final is None:
        stage.final = fit_stage1(image, strokes, voxel_size, seed=seed,
                                 num_classes=num_classes)
        stage.final.forest_weight = stage.model.forest_weight
    return stage.final


# How much of stage 1's probabilities are the forest's, tried on the held-out strokes in this
# order: a tie keeps the earlier one (benchmarks/stage1_classifiers.py, methods mix:W).
FOREST_WEIGHTS = (0.7, 0.5, 1.0, 0.3, 0.0)


def choose_forest_weight(model, image, held: np.ndarray) -> float:
    """The forest's share of stage 1 (``model``, fitted without the ``held`` strokes) that
    classifies most of the held-out strokes right (mean Dice over their classes): the forest
    where classes are told apart by intensity, the MLP where shape and size matter."""
    from .validation import boxes, score

    forest, mlp, truth = [], [], []
    for box in boxes(held):
        where = held[box] > 0
        for weight, parts in ((1.0, forest), (0.0, mlp)):
            model.forest_weight = weight
            parts.append(model.predict_proba(image, region=box)[:, where])
        truth.append(held[box][where])
    forest, mlp, truth = (np.concatenate(a, axis=-1) for a in (forest, mlp, truth))

    def rank(weight):
        labels = (weight * forest + (1 - weight) * mlp).argmax(axis=0) + 1
        return score(labels, truth)[0], -FOREST_WEIGHTS.index(weight)

    return max(FOREST_WEIGHTS, key=rank)


def fit_validated_stage1(image, strokes: np.ndarray, num_classes: int | None, voxel_size, *,
                         seed: int = 0):
    """Stage 1 as a two-stage run saves it: its forest's share chosen on held-out strokes
    (when a class has enough separate strokes), then fitted on all the strokes."""
    from .stage1 import _as_image

    fitting = iter_fit_stage(_as_image(image), strokes, num_classes, voxel_size, seed=seed)
    while True:
        try:
            next(fitting)
        except StopIteration as done:
            stage = done.value
            break
    return final_stage(stage, _as_image(image), strokes, num_classes, voxel_size, seed=seed)


def pseudo_labels(probabilities: np.ndarray, threshold: float = PSEUDO_THRESHOLD) -> np.ndarray:
    """Class 1..K where the highest probability is at least ``threshold``, else 0."""
    confident = probabilities.max(axis=0) >= threshold
    return np.where(confident, probabilities.argmax(axis=0) + 1, 0).astype(np.uint8)


def training_labels(stage: RunStage | None, strokes: np.ndarray, boundary: np.ndarray | None,
                    strata: np.ndarray | None = None):
    """What the sampler draws from: (labels, per-voxel weights, strata). One stage: the
    strokes, the boundary weights and the strata as they are. Two: the training strokes
    (weight 1; held-out ones are not trained on, nor are patches centred on them) and, where
    none is painted, the pseudo-labels (weight :data:`PSEUDO_WEIGHT`), times the boundary
    weights when given. New arrays: the strokes are never modified."""
    if stage is None:
        return strokes, boundary, strata
    if stage.held_out is not None:
        out = stage.held_out > 0
        strokes = np.where(out, 0, strokes).astype(strokes.dtype, copy=False)
        strata = None if strata is None else np.where(out, 0, strata).astype(strata.dtype,
                                                                             copy=False)
    painted = strokes > 0
    labels = np.where(painted, strokes, stage.pseudo).astype(strokes.dtype, copy=False)
    weights = np.where(painted, np.float32(1.0),
                       np.where(stage.pseudo > 0, np.float32(PSEUDO_WEIGHT), np.float32(0.0)))
    if boundary is not None:
        weights = weights * boundary
    return labels, weights.astype(np.float32, copy=False), strata


def network_input(normalized: np.ndarray, stage: RunStage | None) -> np.ndarray:
    """The network's input in training: the normalized image, then stage 1's probabilities."""
    if stage is None:
        return normalized
    return np.concatenate([normalized, stage.probabilities.astype(np.float32)], axis=0)
