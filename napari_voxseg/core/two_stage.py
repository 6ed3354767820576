"""The two-stage engine (the default for multi-class and multi-label tasks with a loss that
weighs voxels; see :func:`resolve_two_stage`): stage 1 (:mod:`.stage1`, a per-voxel
classifier on the filter bank; :mod:`.stage1_multilabel`, one binary one per class, for
multi-label) is fitted on the strokes, and the U-Net gets its class probabilities as extra
input channels (the normalized image first, then the K probabilities) and learns from the
strokes plus stage 1's confident voxels as pseudo-labels, weighted below the strokes. Some
strokes are held out (:mod:`.validation`); the U-Net's weights are kept only when it beats
stage 1 on them, else the saved model predicts what stage 1 does.

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
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import VoxSegError
from .losses import losses_for, weighable_losses

if TYPE_CHECKING:
    from .stage1 import Stage1
    from .stage1_multilabel import MultiLabelStage1

PSEUDO_THRESHOLD = 0.8  # stage-1 probability from which an unpainted voxel is a pseudo-label
PSEUDO_WEIGHT = 0.3  # a pseudo-label's weight in the loss; a stroke weighs 1


TASKS = ("multiclass", "multilabel")  # the tasks stage 1 can do


def resolve_two_stage(two_stage, task: str, loss: str) -> bool:
    """Whether a run has two stages: ``two_stage`` when True or False; None (auto) means yes
    for multi-class and multi-label with a loss that weighs voxels (ce, weighted or not;
    boundary_ce; bce), else no. Regression trains one stage: stage 1 classifies voxels, and
    a per-voxel regressor on the filters would only pass the U-Net a smoothed copy of its
    input. :class:`VoxSegError` (one line) for a two-stage setting that cannot be
    honoured."""
    weighable = weighable_losses()
    if two_stage is None:
        return task in TASKS and loss in weighable
    if not isinstance(two_stage, bool):
        raise VoxSegError(f"two_stage = {two_stage!r}; give True, False or None (auto)")
    if not two_stage:
        return False
    if task not in TASKS:
        raise VoxSegError(f"two_stage is for the {' and '.join(TASKS)} tasks, not {task}; "
                          "turn two_stage off")
    if loss not in weighable:
        allowed = [name for name in losses_for(task) if name in weighable]
        raise VoxSegError(f"two_stage weighs pseudo-labels below strokes, which loss {loss!r} "
                          f"cannot do; choose loss {' or '.join(allowed)}, or turn two_stage "
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

    model: Stage1 | MultiLabelStage1
    probabilities: np.ndarray  # (K, Z, Y, X) float32 (multi-label: of 'present')
    pseudo: np.ndarray  # (Z, Y, X) uint8 1..K, or multi-label (K, Z, Y, X) 1/2; 0 = unsure
    held_out: np.ndarray | None = None
    score: tuple[float, float] | None = None
    final: Stage1 | MultiLabelStage1 | None = None
    overlay: np.ndarray | None = None


def fit_any_stage1(image, strokes: np.ndarray, num_classes: int | None, voxel_size, *,
                   seed: int = 0, device="cpu", should_stop=None):
    """Stage 1 for multi-class strokes (Z, Y, X) or multi-label ones (K, Z, Y, X); its
    filters and MLP computed on ``device`` (the forest fits on the CPU). ``should_stop``: see
    :func:`~.stage1.fit_stage1`."""
    from .stage1 import fit_stage1
    from .stage1_multilabel import fit_multilabel_stage1

    if np.ndim(strokes) == 4:
        return fit_multilabel_stage1(image, strokes, voxel_size, seed=seed, device=device,
                                     should_stop=should_stop)
    return fit_stage1(image, strokes, voxel_size, seed=seed, num_classes=num_classes,
                      device=device, should_stop=should_stop)


def stage_device(device) -> torch.device:
    """Where a run computes stage 1: the training GPU when it is a CUDA one, else the CPU
    (the filters need float64 steps that Apple's MPS lacks)."""
    device = torch.device(device)
    return device if device.type == "cuda" else torch.device("cpu")


def iter_fit_stage(image: np.ndarray, strokes: np.ndarray, num_classes: int | None, voxel_size,
                   *, seed: int = 0, overlay: bool = False, held="split", region=None,
                   device="cpu", should_stop=None):
    """Fit stage 1 for a run on the (C, Z, Y, X) image and its strokes (Z, Y, X; multi-label
    (K, Z, Y, X)); a generator that returns the :class:`RunStage`. ``held``: "split" to hold
    strokes out afresh, else the held-out strokes to keep (or None). With ``overlay`` it
    yields ``(probabilities (K, z, y, x), region)`` as they become ready, to be shown: first
    the forest's alone (about a second) on all the strokes, then the whole stage 1's (on the
    training strokes: what the U-Net is judged against; the saved model's stage 1 is fitted
    on all of them at the end). On a volume too large for the first to be quick, it covers
    only the region in view (``region()``: three slices, or None) when one is given; else
    ``region`` is the whole volume (None). ``device``: see :func:`stage_device`.
    ``should_stop()``, polled between blocks: true raises :class:`StoppedEarly` (a Stop
    while stage 1 fits is heard within a block, not at the end of the whole stage)."""
    from .stage1 import quick_overlay
    from .validation import score_probabilities, split_strokes

    shown = None
    if overlay:
        where = _quick_region(region, image.shape[1:])
        shown = quick_overlay(image, strokes, voxel_size, seed=seed, num_classes=num_classes,
                              region=where)
        yield shown, where
        shown = None if where is not None else shown
    if isinstance(held, str):
        train, held = split_strokes(strokes, seed)
    else:
        train = strokes if held is None else np.where(held > 0, 0, strokes).astype(
            strokes.dtype, copy=False)
    model = fit_any_stage1(image, train, num_classes, voxel_size, seed=seed, device=device,
                           should_stop=should_stop)
    if held is not None:
        choose_forest_weights(model, image, held, device=device)
    probs = model.predict_proba(image, device=device, should_stop=should_stop)
    stage = RunStage(model, probs, pseudo_labels(probs, multilabel=strokes.ndim == 4),
                     held_out=held, overlay=shown)
    if held is None:
        stage.final = model
    else:
        stage.score = score_probabilities(probs, held)
    if overlay:
        stage.overlay = probs
        yield probs, None
    return stage


# The first overlay of a volume of more voxels than this covers the region in view first,
# and only its middle slice when the region has more than QUICK_REGION voxels.
QUICK_VOXELS, QUICK_REGION = 1 << 21, 1 << 20


def _quick_region(region, shape) -> tuple[slice, ...] | None:
    """Where the first overlay goes: the whole volume when it is small, else the region in
    view (its middle slice when the region itself is large), else the whole volume."""
    if region is None or int(np.prod(shape)) <= QUICK_VOXELS:
        return None
    where = region()
    if where is None:
        return None
    where = tuple(slice(*r.indices(n)[:2]) for r, n in zip(where, shape))
    if int(np.prod([r.stop - r.start for r in where])) > QUICK_REGION:
        middle = (where[0].start + where[0].stop) // 2
        where = (slice(middle, middle + 1), *where[1:])
    return where


def final_stage(stage: RunStage, image, strokes, num_classes: int | None, voxel_size, *,
                seed: int = 0, device="cpu"):
    """Stage 1 on all the strokes, for the saved model (fitted now if strokes were held
    out), with the forest shares chosen on the held-out strokes."""
    if stage.final is None:
        stage.final = fit_any_stage1(image, strokes, num_classes, voxel_size, seed=seed,
                                     device=device)
        for final, fitted in zip(_members(stage.final), _members(stage.model)):
            final.forest_weight = fitted.forest_weight
    return stage.final


def _members(model) -> list:
    """The binary stage 1s of a multi-label stage 1, else ``[model]``."""
    return list(getattr(model, "members", [model]))


# How much of stage 1's probabilities are the forest's, tried on the held-out strokes in this
# order: a tie keeps the earlier one (benchmarks/stage1_classifiers.py, methods mix:W).
FOREST_WEIGHTS = (0.7, 0.5, 1.0, 0.3, 0.0)


def choose_forest_weights(model, image, held: np.ndarray, device="cpu") -> None:
    """Set the forest's share of stage 1 (``model``, fitted without the ``held`` strokes; of
    each class's stage 1 for multi-label, on that class's held-out strokes) to what
    classifies the held-out strokes best: :func:`choose_forest_weight`."""
    layers = list(held) if held.ndim == 4 else [held]
    for member, layer in zip(_members(model), layers):
        if layer.any():
            member.forest_weight = choose_forest_weight(member, image, layer, device)


def choose_forest_weight(model, image, held: np.ndarray, device="cpu") -> float:
    """The forest's share of stage 1 (``model``, fitted without the ``held`` strokes) that
    classifies most of the held-out strokes right (mean Dice over their classes): the forest
    where classes are told apart by intensity, the MLP where shape and size matter."""
    from .validation import boxes, score

    by_forest: list[np.ndarray] = []
    by_mlp: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    for box in boxes(held):
        where = held[box] > 0
        for weight, parts in ((1.0, by_forest), (0.0, by_mlp)):
            model.forest_weight = weight
            parts.append(model.predict_proba(image, region=box, device=device)[:, where])
        truths.append(held[box][where])
    forest, mlp, truth = (np.concatenate(a, axis=-1) for a in (by_forest, by_mlp, truths))

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


def pseudo_labels(probabilities: np.ndarray, threshold: float = PSEUDO_THRESHOLD, *,
                  multilabel: bool = False) -> np.ndarray:
    """Class 1..K where the highest probability is at least ``threshold``, else 0.
    Multi-label (probabilities of 'present'): per class 2 (present) where it is at least
    ``threshold``, 1 (absent) where at most ``1 - threshold``, else 0."""
    if multilabel:
        return np.where(probabilities >= threshold, 2,
                        np.where(probabilities <= 1 - threshold, 1, 0)).astype(np.uint8)
    confident = probabilities.max(axis=0) >= threshold
    return np.where(confident, probabilities.argmax(axis=0) + 1, 0).astype(np.uint8)


def training_labels(stage: RunStage | None, strokes: np.ndarray, boundary: np.ndarray | None,
                    strata: np.ndarray | None = None):
    """What the sampler draws from: (labels, per-voxel weights, strata). One stage: the
    strokes, the boundary weights and the strata as they are. Two: the training strokes
    (weight 1; held-out ones are not trained on, nor are patches centred on them) and, where
    none is painted, the pseudo-labels (weight :data:`PSEUDO_WEIGHT`), times the boundary
    weights when given. New arrays: the strokes are never modified. Multi-label strokes
    (K, Z, Y, X) get weights of that shape, each class's own."""
    if stage is None:
        return strokes, boundary, strata
    if stage.held_out is not None:
        out = stage.held_out > 0
        strokes = np.where(out, 0, strokes).astype(strokes.dtype, copy=False)
        anywhere = out.any(axis=0) if out.ndim == 4 else out
        strata = None if strata is None else np.where(anywhere, 0, strata).astype(
            strata.dtype, copy=False)
    painted = strokes > 0
    labels = np.where(painted, strokes, stage.pseudo).astype(strokes.dtype, copy=False)
    weights = np.where(painted, np.float32(1.0),
                       np.where(stage.pseudo > 0, np.float32(PSEUDO_WEIGHT), np.float32(0.0)))
    if boundary is not None:
        weights = weights * boundary
    return labels, weights.astype(np.float32, copy=False), strata


def stage_labels(probabilities: np.ndarray, task: str) -> np.ndarray:
    """The labels stage 1's probabilities predict, as a network's prediction gives them:
    (Z, Y, X) 1..K; multi-label (K, Z, Y, X) 1 = absent, 2 = present."""
    if task == "multilabel":
        return (1 + (probabilities >= 0.5)).astype(np.uint8)
    return (probabilities.argmax(axis=0) + 1).astype(np.uint8)


def network_input(normalized: np.ndarray, stage: RunStage | None) -> np.ndarray:
    """The network's input in training: the normalized image, then stage 1's probabilities."""
    if stage is None:
        return normalized
    return np.concatenate([normalized, stage.probabilities.astype(np.float32)], axis=0)
