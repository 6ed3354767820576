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


def precision_per_class(prediction, truth, classes=None) -> dict[int, float]:
    """Of the voxels predicted as each class, the share that are (NaN where none is)."""
    return _per_class(prediction, truth, classes,
                      lambda tp, fp, fn: float("nan") if tp + fp == 0 else float(tp / (tp + fp)))


def recall_per_class(prediction, truth, classes=None) -> dict[int, float]:
    """Of the voxels of each class, the share predicted as it (NaN where there is none)."""
    return _per_class(prediction, truth, classes,
                      lambda tp, fp, fn: float("nan") if tp + fn == 0 else float(tp / (tp + fn)))


SCORES = ("dice", "iou", "precision", "recall", "hd95", "assd")


def _scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    def ratio(a, b):
        return float(a / b) if b else float("nan")

    return {"dice": ratio(2 * tp, 2 * tp + fp + fn), "iou": ratio(tp, tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


def _class_counts(pred: np.ndarray, gt: np.ndarray) -> dict[int, tuple[int, int, int]] | None:
    """(TP, FP, FN) of each class > 0 in either volume, from one confusion matrix built a slice
    of voxels at a time (None when the ids are too many or negative for one)."""
    low = min(int(pred.min(initial=0)), int(gt.min(initial=0)))
    n = max(int(pred.max(initial=0)), int(gt.max(initial=0))) + 1
    if low < 0 or n > 1024:
        return None
    confusion = np.zeros((n, n), np.int64)
    flat_p, flat_g = pred.reshape(-1), gt.reshape(-1)
    for start in range(0, flat_p.size, 1 << 24):
        chunk = slice(start, start + (1 << 24))
        index = flat_p[chunk].astype(np.int64) * n + flat_g[chunk].astype(np.int64)
        confusion += np.bincount(index, minlength=n * n).reshape(n, n)
    rows, columns = confusion.sum(1), confusion.sum(0)
    return {c: (int(confusion[c, c]), int(rows[c] - confusion[c, c]),
                int(columns[c] - confusion[c, c]))
            for c in range(1, n) if rows[c] or columns[c]}


def class_report(prediction, truth, voxel_size=None, *, multilabel: bool = False,
                 surface: bool = True) -> dict[int, dict[str, float | str]]:
    """Per class (1..K): Dice, IoU, precision, recall and, with ``surface``, the HD95 and
    ASSD in the units of ``voxel_size`` (see :mod:`.surface`) with the empty-set ``note``.
    ``multilabel``: ``(K, Z, Y, X)`` labels, each class 'present' where 2."""
    from .surface import surface_score

    pred, gt = _check_pair(prediction, truth)
    if multilabel:
        if pred.ndim != 4:
            raise VoxSegError(f"multi-label labels are (K, Z, Y, X); these are {pred.ndim}D")
        masks = {k + 1: (lambda k=k: (pred[k] == 2, gt[k] == 2)) for k in range(len(pred))}
        counts = {c: _mask_counts(*masks[c]()) for c in masks}
    else:
        found = _class_counts(pred, gt)
        if found is None:
            classes = sorted(int(c) for c in np.union1d(np.unique(pred), np.unique(gt))
                             if c > 0)
            found = {c: _mask_counts(pred == c, gt == c) for c in classes}
        counts = found
        masks = {c: (lambda c=c: (pred == c, gt == c)) for c in counts}
    report: dict[int, dict[str, float | str]] = {}
    for c, (tp, fp, fn) in counts.items():
        row: dict[str, float | str] = dict(_scores(tp, fp, fn))
        if surface:
            score = surface_score(*masks[c](), voxel_size)
            row.update(hd95=score.hd95, assd=score.assd, note=score.note)
        report[c] = row
    return report


def _mask_counts(p: np.ndarray, g: np.ndarray) -> tuple[int, int, int]:
    tp = int(np.count_nonzero(p & g))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp


def object_f1(prediction, truth, threshold: float = 0.5) -> dict[str, float]:
    """Object-level agreement of two instance label volumes (0 = background, each object its
    own id): an object of each that overlap with IoU above ``threshold`` (0.5: at most one
    partner each) are a match. Returns precision, recall and F1 over objects, with the counts
    (``matched``, ``predicted``, ``true``). Both empty: F1 1."""
    if not 0.5 <= threshold < 1:
        raise VoxSegError(f"IoU threshold {threshold} must be from 0.5 to below 1 (below 0.5 "
                          "an object could match several)")
    pred, gt = _check_pair(prediction, truth)
    p_ids, p_flat = np.unique(pred.ravel(), return_inverse=True)
    g_ids, g_flat = np.unique(gt.ravel(), return_inverse=True)
    p_size = np.bincount(p_flat.ravel(), minlength=len(p_ids))
    g_size = np.bincount(g_flat.ravel(), minlength=len(g_ids))
    # Only the pairs that overlap (a dense objects-by-objects matrix would not fit in memory).
    pair, overlap = np.unique(p_flat.ravel().astype(np.int64) * len(g_ids) + g_flat.ravel(),
                              return_counts=True)
    p_of, g_of = pair // len(g_ids), pair % len(g_ids)
    objects = (p_ids[p_of] > 0) & (g_ids[g_of] > 0)  # not the background
    union = p_size[p_of] + g_size[g_of] - overlap
    matched = int(((overlap / union > threshold) & objects).sum())
    predicted, true = int((p_ids > 0).sum()), int((g_ids > 0).sum())
    precision = matched / predicted if predicted else float(true == 0)
    recall = matched / true if true else float(predicted == 0)
    f1 = 2 * matched / (predicted + true) if predicted + true else 1.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": matched,
            "predicted": predicted, "true": true}


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
