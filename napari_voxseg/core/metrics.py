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


def multilabel_dice(prediction, truth) -> dict[int, float]:
    """Dice of 'present' (value 2) per class for multi-label ``(K, Z, Y, X)`` labels, keys 1..K."""
    pred, gt = _check_pair(prediction, truth)
    if pred.ndim != 4:
        raise VoxSegError(f"multi-label labels are (K, Z, Y, X); these are {pred.ndim}D")
    return {k + 1: dice_per_class(p == 2, g == 2, classes=[1])[1]
            for k, (p, g) in enumerate(zip(pred, gt))}


def regression_errors(prediction, truth, mask=None) -> dict[str, float]:
    """Mean absolute and root-mean-square error where the truth is finite (and ``mask`` is
    nonzero, when given)."""
    pred = np.asarray(prediction, dtype=np.float64)
    gt = np.asarray(truth, dtype=np.float64)
    if pred.shape != gt.shape:
        raise VoxSegError(f"prediction has shape {pred.shape} but the target has shape "
                          f"{gt.shape}; compare values of the same volume")
    known = np.isfinite(gt)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != gt.shape:
            raise VoxSegError(f"mask has shape {mask.shape} but the target has shape {gt.shape}")
        known &= mask != 0
    if not known.any():
        raise VoxSegError("no voxel where the target is known; check the mask")
    bad = int((~np.isfinite(pred[known])).sum())
    if bad:
        raise VoxSegError(f"the prediction has {bad} NaN or infinite value(s) where the target "
                          "is known; predict again or check the file")
    diff = pred[known] - gt[known]
    return {"mae": float(np.abs(diff).mean()), "rmse": float(np.sqrt((diff * diff).mean())),
            "voxels": int(known.sum())}
