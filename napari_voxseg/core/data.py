"""Checks and normalization of images, labels and class weights.

Conventions (see DESIGN.md): images are float32 ``(C, Z, Y, X)``; labels are integer ``(Z, Y, X)``
with 0 = not annotated and 1..K = classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import VoxSegError

# Percentiles used to map intensities to roughly [0, 1]; robust to a few hot or dead voxels.
DEFAULT_PERCENTILES = (1.0, 99.8)
# The most classes a network has (its outputs are stored as uint8 labels 1..K).
MAX_CLASSES = 255
# Above this many voxels, percentiles are estimated on a strided subsample.
_PERCENTILE_SAMPLE = 2_000_000


def _describe(array) -> str:
    return f"shape {tuple(array.shape)}, dtype {array.dtype}"


def check_image(image, *, name: str = "image", channels: int | None = None) -> np.ndarray:
    """Return ``image`` as float32 ``(C, Z, Y, X)`` or raise :class:`VoxSegError`.

    A ``(Z, Y, X)`` array gets a channel axis of length 1. ``channels``, when given, is the channel
    count a model expects.
    """
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise VoxSegError(
            f"{name} has dtype {array.dtype}, not numbers; load a grey-level volume "
            "(integers or floats)"
        )
    if array.ndim == 3:
        array = array[np.newaxis]
    elif array.ndim == 4:
        if channels is None and array.shape[0] > 16:
            raise VoxSegError(
                f"{name} is 4D ({_describe(array)}) with {array.shape[0]} channels on the first "
                "axis; voxseg takes (Z, Y, X) or (C, Z, Y, X) with the channels first: "
                "move the channel axis first (np.moveaxis) or select one channel"
            )
    elif array.ndim < 3:
        raise VoxSegError(
            f"{name} is {array.ndim}D ({_describe(array)}); voxseg segments 3D volumes (Z, Y, X): "
            "open a stack of slices, or add a Z axis of length 1 (array[np.newaxis])"
        )
    else:
        raise VoxSegError(
            f"{name} is {array.ndim}D ({_describe(array)}); voxseg takes (Z, Y, X) or "
            "(C, Z, Y, X): select one time point or drop the extra axes"
        )
    if 0 in array.shape:
        raise VoxSegError(f"{name} is empty ({_describe(array)}); open a volume with voxels in it")
    if channels is not None and array.shape[0] != channels:
        raise VoxSegError(
            f"{name} has {array.shape[0]} channel(s) but the model was trained on {channels}; "
            f"give an image with {channels} channel(s) first, as (C, Z, Y, X)"
        )
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise VoxSegError(
            f"{name} has {bad} NaN or infinite voxel(s); replace them first "
            "(e.g. np.nan_to_num(image)) or crop them away"
        )
    return array


def check_labels(
    labels, spatial_shape: Sequence[int], *, num_classes: int | None = None, name: str = "labels"
) -> tuple[np.ndarray, int]:
    """Check strokes and return ``(labels, K)``.

    ``labels`` must be an integer ``(Z, Y, X)`` array of the image's spatial shape, with 0 for "not
    annotated" and 1..K for classes; at least two classes must have strokes. ``K`` is
    ``num_classes`` when given, else the largest class id painted. The input is never modified.
    """
    array = np.asarray(labels)
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if array.dtype.kind == "b":
        raise VoxSegError(
            f"{name} is a boolean mask; voxseg needs class ids (0 = not annotated, 1..K = "
            "classes): convert with mask.astype(np.uint8) + 1 where the mask is annotated"
        )
    if array.dtype.kind not in "iu":
        raise VoxSegError(
            f"{name} has dtype {array.dtype}; strokes must be integers (0 = not annotated, "
            "1..K = classes): use a Labels layer, or convert with labels.astype(np.uint8)"
        )
    if array.shape != spatial_shape:
        raise VoxSegError(
            f"{name} have shape {array.shape} but the image has shape {spatial_shape}; "
            "paint on a Labels layer made for this image ('New annotations')"
        )
    if array.size and array.min() < 0:
        raise VoxSegError(
            f"{name} hold negative values (min {int(array.min())}); use 0 for not annotated "
            "and 1..K for classes"
        )
    present = np.unique(array)
    present = present[present > 0]
    if present.size == 0:
        raise VoxSegError(
            f"{name} hold no strokes (every voxel is 0); paint a few strokes of each class "
            "(1 = background, 2 = object, ...) and train again"
        )
    if present.size == 1:
        raise VoxSegError(
            f"{name} hold strokes of only one class ({int(present[0])}); paint at least two "
            "classes, e.g. 1 for background and 2 for the objects"
        )
    largest = int(present.max())
    if largest > MAX_CLASSES:
        raise VoxSegError(
            f"{name} use class {largest}; voxseg takes at most {MAX_CLASSES} classes: number "
            f"the classes 1..K with K <= {MAX_CLASSES}"
        )
    if num_classes is not None:
        num_classes = int(num_classes)
        if not 2 <= num_classes <= MAX_CLASSES:
            raise VoxSegError(f"class count is {num_classes}; give 2 to {MAX_CLASSES} classes")
        if largest > num_classes:
            raise VoxSegError(
                f"{name} use class {largest} but the class count is {num_classes}; raise the "
                f"class count to {largest} or erase the strokes of class {largest}"
            )
    return array, num_classes if num_classes is not None else largest


def stroke_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Voxels painted per class, index 0 = class 1."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=num_classes + 1)
    return counts[1 : num_classes + 1].astype(np.int64)


WEIGHT_SPECS = ("none", "auto", "median")


def _computed_weights(kind: str, positives: np.ndarray, annotated: np.ndarray,
                      multilabel: bool) -> np.ndarray:
    """Weights from stroke counts: ``positives`` per class and ``annotated`` per class."""
    positives = positives.astype(np.float64)
    annotated = annotated.astype(np.float64)
    weights = np.zeros(positives.size) if not multilabel else np.ones(positives.size)
    usable = (positives > 0) & (annotated > positives if multilabel else annotated > 0)
    if not usable.any():
        return weights.astype(np.float32)
    freq = positives[usable] / annotated[usable]
    if kind == "median":
        weights[usable] = np.median(freq) / freq
    elif multilabel:  # PyTorch's pos_weight: absent / present
        weights[usable] = (annotated[usable] - positives[usable]) / positives[usable]
    else:
        weights[usable] = 1.0 / freq
        weights[usable] /= weights[usable].mean()
    return np.clip(weights, 0.0, 1e6).astype(np.float32)


def class_weights(spec, labels: np.ndarray, num_classes: int,
                  task: str = "multiclass") -> np.ndarray | None:
    """Per-class loss weights from a spec.

    ``spec`` is ``None``/``"none"`` (no weights), ``"auto"``, ``"median"``, or weights
    ``"w1,w2,..."`` / a sequence, one per class. Computed weights come from the strokes:

    - multi-class (``labels`` ``(Z, Y, X)``, 1..K): ``auto`` is the inverse frequency of each
      class among the painted voxels, scaled to mean 1; ``median`` is median-frequency balancing
      (median of the class frequencies / the class frequency). Unpainted classes get 0.
    - multi-label (``labels`` ``(K, Z, Y, X)``, 1 absent / 2 present): the weights are positive
      weights; ``auto`` is absent / present voxels per class (PyTorch's ``pos_weight``),
      ``median`` median-frequency balancing of the 'present' frequencies.
    - regression has no classes: only ``none``.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    if task == "regression":
        raise VoxSegError(f"class weights {spec!r} given for a regression task, which has no "
                          "classes; set class weights to none")
    if isinstance(spec, str) and spec.strip().lower() in ("auto", "median"):
        kind = spec.strip().lower()
        if task == "multilabel":
            flat = np.asarray(labels).reshape(num_classes, -1)
            positives = (flat == 2).sum(axis=1)
            annotated = (flat > 0).sum(axis=1)
            return _computed_weights(kind, positives, annotated, multilabel=True)
        counts = stroke_counts(labels, num_classes)
        total = np.full(num_classes, counts.sum())
        return _computed_weights(kind, counts, total, multilabel=False)
    if isinstance(spec, str):
        parts = [p for p in spec.replace(";", ",").split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise VoxSegError(
                f"class weights {spec!r} are not numbers; give 'auto', 'median', 'none' or one "
                f"number per class, e.g. '1,2' for 2 classes"
            ) from None
    else:
        try:
            values = [float(v) for v in spec]
        except (TypeError, ValueError):
            raise VoxSegError(
                f"class weights {spec!r} are not numbers; give one number per class"
            ) from None
    weights = np.asarray(values, dtype=np.float64)
    if weights.size != num_classes:
        raise VoxSegError(
            f"{weights.size} class weight(s) given for {num_classes} classes; give exactly one "
            f"weight per class ({num_classes}), or 'auto'"
        )
    if not np.isfinite(weights).all() or (weights < 0).any() or (weights > 1e6).any():
        raise VoxSegError(
            f"class weights {values} must be finite, >= 0 and at most 1e6; fix the ones that "
            "are not"
        )
    if weights.sum() == 0:
        raise VoxSegError("class weights are all 0, so nothing would be learned; give "
                          "positive weights")
    return weights.astype(np.float32)


def percentiles(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per-channel ``(low, high)`` percentiles of a ``(C, Z, Y, X)`` image, shape (C, 2)."""
    out = np.empty((image.shape[0], 2), dtype=np.float64)
    for c, channel in enumerate(image):
        flat = channel.ravel()
        if flat.size > _PERCENTILE_SAMPLE:
            flat = flat[:: flat.size // _PERCENTILE_SAMPLE + 1]
        out[c] = np.percentile(flat, [low, high])
    return out


def normalize(image: np.ndarray, low: float = DEFAULT_PERCENTILES[0],
              high: float = DEFAULT_PERCENTILES[1]) -> np.ndarray:
    """Map each channel of a float32 ``(C, Z, Y, X)`` image so its percentiles go to 0 and 1."""
    return normalize_with(image, percentiles(image, low, high))


def normalize_with(block: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Map each channel of a ``(C, Z, Y, X)`` block so that ``bounds[c]`` (low, high) go to 0
    and 1 (bounds from :func:`percentiles`, perhaps of a larger volume)."""
    out = np.empty(block.shape, dtype=np.float32)
    for c, (lo, hi) in enumerate(bounds):
        scale = hi - lo if hi > lo else 1.0
        np.subtract(block[c].astype(np.float32, copy=False), np.float32(lo), out=out[c])
        out[c] *= np.float32(1.0 / scale)
    return out
