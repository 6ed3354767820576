"""Strokes held out to judge the two stages: does the U-Net beat stage 1 on strokes that
neither was trained on? (Two-stage training, :mod:`.two_stage`.)

:func:`split_strokes` holds out about a quarter of the separate strokes (connected pieces) of
every class painted in at least :data:`MIN_PIECES` pieces, chosen with the run's seed;
:func:`score` is the mean Dice over the held-out classes of a prediction on the held-out
voxels (ties broken by the mean probability of the painted class); :func:`boxes` are the
regions a network predicts to be scored (in a run: :mod:`.judge`). Held-out strokes are
never lost: stage 1 is fitted on all of them for the saved model, and a stroke painted during
training always trains.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

HOLD_OUT = 0.25  # the share of a class's strokes held out
MIN_PIECES = 3  # a class painted in fewer separate strokes keeps them all for training
MAX_HELD = 8  # held-out strokes per class at most (each is a region to predict)


def split_strokes(strokes: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """(training strokes, held-out strokes or None): new arrays of the strokes' shape and
    dtype, 0 where not in that part. None when no class has :data:`MIN_PIECES` pieces.
    Multi-label strokes (K, Z, Y, X): each class's volume is split on its own."""
    if strokes.ndim == 4:
        parts = [split_strokes(layer, seed + k) for k, layer in enumerate(strokes)]
        if all(held is None for _, held in parts):
            return strokes.copy(), None
        return (np.stack([train for train, _ in parts]),
                np.stack([np.zeros_like(train) if held is None else held
                          for train, held in parts]))
    rng = np.random.default_rng(seed)
    held = np.zeros_like(strokes)
    structure = np.ones((3, 3, 3), dtype=bool)
    box = bounding_box(strokes)  # strokes are few: label them there, not in the volume
    if box is None:
        return strokes.copy(), None
    inside = strokes[box]
    for value in np.unique(inside[inside > 0]):
        pieces, count = ndimage.label(inside == value, structure=structure)
        if count < MIN_PIECES:
            continue
        take = min(MAX_HELD, max(1, int(round(HOLD_OUT * count))))
        chosen = rng.choice(np.arange(1, count + 1), size=take, replace=False)
        held[box][np.isin(pieces, chosen)] = value
    if not held.any():
        return strokes.copy(), None
    return np.where(held > 0, 0, strokes).astype(strokes.dtype, copy=False), held


def bounding_box(strokes: np.ndarray) -> tuple[slice, ...] | None:
    """The box around the nonzero voxels (None if there are none)."""
    ends = []
    for axis in range(strokes.ndim):
        rest = tuple(a for a in range(strokes.ndim) if a != axis)
        found = np.flatnonzero(np.any(strokes, axis=rest))
        if found.size == 0:
            return None
        ends.append(slice(int(found[0]), int(found[-1]) + 1))
    return tuple(ends)


def still_held(held: np.ndarray | None, strokes: np.ndarray) -> np.ndarray | None:
    """The held-out strokes that newer ``strokes`` still hold with the same class (strokes
    painted since train; erased ones are gone); None when none are left."""
    if held is None:
        return None
    kept = np.where((held > 0) & (strokes == held), held, 0).astype(held.dtype, copy=False)
    return kept if kept.any() else None


def boxes(held: np.ndarray) -> list[tuple[slice, slice, slice]]:
    """The bounding boxes of the held-out strokes (one per slice range they touch; of any
    class's, for multi-label strokes (K, Z, Y, X))."""
    if held.ndim == 4:
        held = held.max(axis=0)
    pieces, _ = ndimage.label(held > 0, structure=np.ones((3, 3, 3), dtype=bool))
    return [box for box in ndimage.find_objects(pieces) if box is not None]


def score(labels: np.ndarray, truth: np.ndarray,
          probabilities: np.ndarray | None = None) -> tuple[float, float]:
    """(mean Dice over the classes in ``truth``, mean probability of the true class) of
    predicted ``labels`` (1..K) against held-out strokes ``truth`` (0 = not held out), both
    over the held-out voxels only. ``probabilities`` (K, ...): for the tie-break (0 if None)."""
    where = truth > 0
    t, p = truth[where].astype(np.int64), labels[where].astype(np.int64)
    dices = []
    for value in np.unique(t):
        hit = int(np.count_nonzero((t == value) & (p == value)))
        dices.append(2 * hit / (np.count_nonzero(t == value) + np.count_nonzero(p == value)))
    confidence = 0.0
    if probabilities is not None:
        flat = probabilities[:, where]  # (K, N)
        confidence = float(flat[t - 1, np.arange(t.size)].mean())
    return float(np.mean(dices)), confidence


def score_probabilities(probabilities: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """:func:`score` of the prediction ``probabilities`` make: softmax ones (K, ...) against
    held-out strokes (...) 1..K; or, multi-label, P(present) (K, ...) against held-out
    strokes (K, ...) 0/1/2, the mean over the classes with held-out strokes of each class's
    score as a two-class (absent, present) prediction."""
    if truth.ndim != probabilities.ndim:
        return score(probabilities.argmax(axis=0) + 1, truth, probabilities)
    scores = [score(1 + (p >= 0.5), t, np.stack([1 - p, p]))
              for p, t in zip(probabilities, truth) if (t > 0).any()]
    return float(np.mean([d for d, _ in scores])), float(np.mean([c for _, c in scores]))
