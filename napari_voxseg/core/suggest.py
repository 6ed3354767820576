"""Where to paint next: slices ranked by how much new strokes there would teach the model.

    suggestions = suggest(model, image, strokes, axis=0, top=5).suggestions
    for s in suggestions:
        print(s.slice, s.score)

Each slice along ``axis`` gets one score from three things a person would weigh (the first two
taken over the slice and its neighbours, Gaussian-weighted, see :func:`reach`):

- **uncertainty**: the mean over the slice of the prediction's normalized entropy (0 = sure,
  1 = all classes equally likely);
- **disagreement** (two-stage models): the mean over the slice of the total variation distance
  between stage 1's probabilities and the U-Net's (0 = they agree, 1 = they say different
  classes with certainty);
- **distance** from the slices already painted: ``1 - exp(-d / tau)`` for ``d`` slices to the
  nearest painted one (``tau`` a tenth of the axis), so a painted slice scores 0 and its
  neighbours little, since strokes there would teach the model what it already saw.

``score = reach(uncertainty + disagreement) * distance``. The slices are chosen one at a time, each
counted as painted when the next is chosen, so the list spreads over the volume instead of
naming five neighbours of one confusing slice; a slice that scores 0 (painted, or with no
doubt at all) is never named. Strokes painted in the planes of another axis (on Z slices, when
Y slices are ranked) cross most slices of this one: then none counts as painted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .errors import VoxSegError
from .models import model_config
from .tasks import task_info

# tau of the distance factor, as a fraction of the number of slices.
DISTANCE_SCALE = 0.1
# A voxel is in a slice's "uncertain region" when its uncertainty plus disagreement is at least
# this (of a most 2); the widget shows that region faintly on the chosen slice.
REGION_THRESHOLD = 0.5


@dataclass
class Suggestion:
    """One slice worth painting, with the parts of its score."""

    slice: int
    axis: int
    score: float
    uncertainty: float
    disagreement: float | None  # None: no stage 1 to disagree with
    nearest_painted: int | None  # slices to the nearest painted one; None: none painted

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class SuggestResult:
    suggestions: list[Suggestion]
    uncertainty: np.ndarray  # (Z, Y, X) per voxel: entropy + disagreement, float32
    painted: list[int]  # the slices along ``axis`` that held strokes


def entropy(probabilities: np.ndarray, task: str = "multiclass") -> np.ndarray:
    """Per-voxel entropy in [0, 1] of (K, Z, Y, X) probabilities: divided by log K (multi-class),
    or the mean over classes of the binary entropy (multi-label)."""
    p = torch.from_numpy(np.asarray(probabilities, dtype=np.float32)).clamp(1e-7, 1 - 1e-7)
    if task == "multilabel":
        h = -(p * p.log() + (1 - p) * (1 - p).log()).mean(dim=0) / math.log(2)
    else:
        h = -(p * p.log()).sum(dim=0) / math.log(max(2, p.shape[0]))
    return h.clamp_(0, 1).numpy()


def disagreement(first: np.ndarray, second: np.ndarray, task: str = "multiclass") -> np.ndarray:
    """Per-voxel total variation distance in [0, 1] between two (K, Z, Y, X) probabilities
    (multi-label: the mean over classes of |p - q|)."""
    diff = np.abs(np.asarray(first, np.float32) - np.asarray(second, np.float32))
    return diff.mean(axis=0) if task == "multilabel" else 0.5 * diff.sum(axis=0)


def painted_slices(strokes: np.ndarray | None, axis: int) -> list[int]:
    """The slices along ``axis`` the user painted in (multi-label: any class's strokes).

    Strokes painted in the planes of another axis cross most slices of this one (strokes on a
    few Z slices touch nearly every Y slice); when more than half the slices along ``axis``
    hold strokes they were painted across it, and none counts as painted in it."""
    if strokes is None:
        return []
    strokes = np.asarray(strokes)
    spatial = np.any(strokes.reshape(-1, *strokes.shape[-3:]) != 0, axis=0)
    others = tuple(a for a in range(3) if a != axis)
    slices = [int(i) for i in np.flatnonzero(np.any(spatial, axis=others))]
    return slices if len(slices) <= spatial.shape[axis] // 2 else []


def _distance_factor(n: int, painted: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
    if not painted:
        return np.ones(n), None
    index = np.arange(n)
    nearest = np.min(np.abs(index[:, None] - np.asarray(painted)[None, :]), axis=1)
    tau = max(1.0, DISTANCE_SCALE * n)
    return 1.0 - np.exp(-nearest / tau), nearest


def reach(per_slice: np.ndarray) -> np.ndarray:
    """What strokes on each slice would teach: the doubt of the slices around it, weighted by
    a Gaussian of their distance (sigma a tenth of the axis; nothing beyond the volume's ends),
    since strokes teach their neighbours too. An edge slice has neighbours on one side only,
    and an isolated doubtful slice (often an artefact) counts less than a doubtful stretch."""
    from scipy.ndimage import gaussian_filter1d

    sigma = max(1.0, DISTANCE_SCALE * per_slice.shape[0])
    return gaussian_filter1d(per_slice.astype(np.float64), sigma, mode="constant")


def rank_slices(uncertainty: np.ndarray, disagree: np.ndarray | None = None, *,
                painted: Sequence[int] = (), axis: int = 0, top: int = 5) -> list[Suggestion]:
    """The ``top`` slices along ``axis`` by score (see the module docstring), best first, from
    per-voxel ``uncertainty`` (Z, Y, X) and ``disagree`` (or None), chosen one at a time."""
    check_top(top)
    others = tuple(a for a in range(3) if a != axis)
    mean_u = np.asarray(uncertainty, np.float64).mean(axis=others)
    mean_d = None if disagree is None else np.asarray(disagree, np.float64).mean(axis=others)
    n = mean_u.shape[0]
    base = reach(mean_u + (0 if mean_d is None else mean_d))
    chosen: list[Suggestion] = []
    taken = list(painted)
    for _ in range(min(top, n)):
        factor, nearest = _distance_factor(n, taken)
        score = base * factor
        score[[s.slice for s in chosen]] = -1.0
        best = int(np.argmax(score))
        if score[best] <= 0:
            break  # every slice left is painted, already named or without doubt
        _, first_nearest = _distance_factor(n, list(painted))
        chosen.append(Suggestion(
            slice=best, axis=axis, score=float(max(score[best], 0.0)),
            uncertainty=float(mean_u[best]),
            disagreement=None if mean_d is None else float(mean_d[best]),
            nearest_painted=None if first_nearest is None else int(first_nearest[best])))
        taken.append(best)
    return chosen


def check_top(top: int) -> int:
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise VoxSegError(f"--top must be a whole number of at least 1, not {top!r}")
    return top


def uncertain_region(uncertainty: np.ndarray, suggestion: Suggestion,
                     threshold: float = REGION_THRESHOLD) -> np.ndarray:
    """The voxels of the suggested slice whose uncertainty (+ disagreement) reaches
    ``threshold``: a (Z, Y, X) bool volume, true only on that slice."""
    region = np.zeros(uncertainty.shape, dtype=bool)
    index = [slice(None)] * 3
    index[suggestion.axis] = slice(suggestion.slice, suggestion.slice + 1)
    region[tuple(index)] = uncertainty[tuple(index)] >= threshold
    return region


def suggest(model: torch.nn.Module, image, strokes: np.ndarray | None = None, *, axis: int = 0,
            top: int = 5, voxel_size: Sequence[float] | None = None,
            device: str | torch.device | None = None, resample: bool = False,
            should_stop: Callable[[], bool] | None = None,
            on_event: Callable[[object], object] | None = None) -> SuggestResult | None:
    """Predict ``image`` ((Z, Y, X) or (C, Z, Y, X)) with ``model`` and rank its slices along
    ``axis`` (0 = Z) for painting next, given the ``strokes`` painted so far (same spatial
    shape; multi-label: one volume per class). ``resample``: as :func:`.infer.iter_predict`.
    None when ``should_stop()`` stopped the prediction; a stop during stage 1 raises
    :class:`.StoppedEarly`."""
    from .data import check_image
    from .infer import iter_predict, run_to_end

    config = model_config(model)
    task = task_info(config.get("task", "multiclass"))
    if not task.has_classes:
        raise VoxSegError("a regression model has no classes to be unsure between; "
                          "'where to paint next' needs a multi-class or multi-label model")
    if axis not in (0, 1, 2):
        raise VoxSegError(f"the axis must be 0 (Z), 1 (Y) or 2 (X), not {axis}")
    check_top(top)
    image = check_image(image)
    shape = image.shape[-3:]
    if strokes is not None and tuple(np.shape(strokes)[-3:]) != tuple(shape):
        raise VoxSegError(f"the labels have shape {tuple(np.shape(strokes))} but the image's "
                          f"spatial shape is {tuple(shape)}; give the labels painted on it")
    result = run_to_end(iter_predict(model, image, probabilities=True, device=device,
                                     should_stop=should_stop, voxel_size=voxel_size,
                                     resample=resample), on_event)
    if result.cancelled:
        return None
    assert result.probabilities is not None
    per_voxel = entropy(result.probabilities, task.name)
    disagree = None
    stage1 = getattr(model, "stage1", None)
    if stage1 is not None:  # on the image's grid, as the probabilities are
        first = stage1.predict_proba(image if image.ndim == 4 else image[None],
                                     voxel_size=voxel_size, should_stop=should_stop,
                                     device=next(model.parameters()).device, threads=None)
        disagree = disagreement(first, result.probabilities, task.name)
    painted = painted_slices(strokes, axis)
    suggestions = rank_slices(per_voxel, disagree, painted=painted, axis=axis, top=top)
    if disagree is not None:
        per_voxel += disagree
    return SuggestResult(suggestions, per_voxel.astype(np.float32, copy=False), painted)
