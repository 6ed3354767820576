"""Agreement between a prediction and a ground truth, per class."""

from __future__ import annotations

import numpy as np

from .errors import VoxSegError


def _check_pair(prediction, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(prediction), np.asarray(truth)
    for name, a in (("prediction", pred), ("ground truth", gt)):
        if a.dtype.kind not in "iub":
            raise VoxSegError(f"{name} has dtype {a.dtype}; give integer labels (1..K)")
    if pred.shape != gt.shape:
        raise VoxSegError(f"prediction has shape {pred.shape} but the ground truth has shape "
                          f"{gt.shape}; compare labels of the same volume")
    return pred, gt


def _per_class(prediction, truth, classes, score) -> dict[int, float]:
    pred, gt = _check_pair(prediction, truth)
    if classes is None:
        classes = sorted(int(c) for c in np.union1d(np.unique(pred), np.unique(gt)) if c > 0)
    n = int(max([0, *classes])) + 1
    flat_p = np.clip(pred.ravel().astype(np.int64), 0, n)
    flat_g = np.clip(gt.ravel().astype(np.int64), 0, n)
    confusion = np.bincount(flat_p * (n + 1) + flat_g, minlength=(n + 1) ** 2).reshape(n + 1, n + 1)
    out = {}
    for c in classes:
        tp = confusion[c, c]
        fp = confusion[c, :].sum() - tp
        fn = confusion[:, c].sum() - tp
        out[int(c)] = score(tp, fp, fn)
    return out


def dice_per_class(prediction, truth, classes=None) -> dict[int, float]:
    """Dice per class (classes = ids > 0 present in either; NaN where absent from both)."""
    return _per_class(prediction, truth, classes,
                      lambda tp, fp, fn: float("nan") if tp + fp + fn == 0
                      else float(2 * tp / (2 * tp + fp + fn)))


def iou_per_class(prediction, truth, classes=None) -> dict[int, float]:
    """Intersection over union per class."""
    return _per_class(prediction, truth, classes,
                      lambda tp, fp, fn: float("nan") if tp + fp + fn == 0
                      else float(tp / (tp + fp + fn)))
