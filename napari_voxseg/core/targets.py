"""What the network learns from, for each task, checked and put in one shape for the sampler.

- ``multiclass``: labels ``(Z, Y, X)``, 0 = not annotated, 1..K = classes (check_labels).
- ``multilabel``: one annotation volume per class, given as ``(K, Z, Y, X)`` or a list of K
  ``(Z, Y, X)`` arrays; in each 0 = not annotated, 1 = absent, 2 = present.
- ``regression``: a float target ``(Z, Y, X)`` and an optional mask (nonzero = known).

:func:`prepare_target` returns a :class:`Target`: the array the loss sees, plus ``strata``, a
``(Z, Y, X)`` int map that the patch sampler balances over (0 = nothing to learn there).

Every check of what a user painted lives here (:func:`check_labels`, :func:`check_multilabel`,
:func:`check_regression`), and so do the class weights computed from it (:func:`class_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import VoxSegError
from .tasks import check_task, task_info

PRESENT, ABSENT = 2, 1
# The most classes a network has (its outputs are stored as uint8 labels 1..K).
MAX_CLASSES = 255


@dataclass
class Target:
    task: str
    data: np.ndarray  # (Z,Y,X) int | (K,Z,Y,X) uint8 | (1,Z,Y,X) float32, NaN = unknown
    num_outputs: int
    strata: np.ndarray  # (Z, Y, X) integers, 0 = not annotated
    fill: float = 0  # value for "not annotated" when padding
    scale: tuple[float, float] | None = None  # regression: (mean, std) of the known values

    @property
    def scale_record(self) -> dict | None:
        """``scale`` as config.json stores it (``target_scale``), and prediction reads it."""
        return None if self.scale is None else {"mean": self.scale[0], "std": self.scale[1]}

    @property
    def annotated(self) -> int:
        return int(np.count_nonzero(self.strata))

    def counts(self) -> list:
        """Stroke counts for the model's record: per class, per class (absent, present), or
        the number of known voxels."""
        if self.task == "multiclass":
            return stroke_counts(self.data, self.num_outputs).tolist()
        if self.task == "multilabel":
            flat = self.data.reshape(self.num_outputs, -1)
            return [[int((f == ABSENT).sum()), int((f == PRESENT).sum())] for f in flat]
        return [int(np.isfinite(self.data).sum())]


def _as_int_volume(array, spatial_shape, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise VoxSegError(f"{name} has dtype {array.dtype}; it must hold integers (use a "
                          "Labels layer, or convert with .astype(np.uint8))")
    if array.shape != tuple(spatial_shape):
        raise VoxSegError(f"{name} has shape {array.shape} but the image has shape "
                          f"{tuple(spatial_shape)}; paint on a Labels layer made for this image "
                          "('New annotations')")
    return array


def check_multilabel(labels, spatial_shape: Sequence[int], *, num_classes: int | None = None,
                     names: Sequence[str] | None = None) -> tuple[np.ndarray, int]:
    """Check multi-label annotations and return ``((K, Z, Y, X) uint8, K)``."""
    spatial_shape = tuple(int(s) for s in spatial_shape)
    volumes: list | None
    if isinstance(labels, (list, tuple)):
        volumes = list(labels)
    else:
        array = np.asarray(labels)
        volumes = [array] if array.ndim == 3 else list(array) if array.ndim == 4 else None
        if volumes is None:
            raise VoxSegError(f"multi-label annotations are {array.ndim}D (shape {array.shape}); "
                              "give one (Z, Y, X) volume per class, stacked as (K, Z, Y, X)")
    if not volumes:
        raise VoxSegError("no annotation layers chosen; a multi-label task needs one "
                          "annotation layer per class")
    if len(volumes) > 255:
        raise VoxSegError(f"{len(volumes)} multi-label classes; voxseg takes at most 255")
    names = list(names or [])
    names += [f"class {i + 1}" for i in range(len(names), len(volumes))]
    checked = []
    for volume, name in zip(volumes, names):
        array = _as_int_volume(volume, spatial_shape, name)
        check_layer_present(np.unique(array), name)
        checked.append(array.astype(np.uint8, copy=False))
    if num_classes is not None and len(checked) != int(num_classes):
        raise VoxSegError(f"{len(checked)} annotation layer(s) given but the model has "
                          f"{num_classes} classes; choose {num_classes} layers, one per class")
    return np.stack(checked), len(checked)


def check_layer_present(values, name: str) -> None:
    """One multi-label layer holding ``values``: only 0, 1 (absent) and 2 (present), with
    strokes of both 1 and 2."""
    present = np.asarray(values)
    bad = present[(present < 0) | (present > PRESENT)]
    if bad.size:
        raise VoxSegError(f"{name} holds the value {int(bad[-1])}; multi-label annotations "
                          "use 1 = absent and 2 = present (0 = not annotated)")
    if PRESENT not in present:
        raise VoxSegError(f"{name} has no 'present' strokes; paint with label 2 where the "
                          "class is, and 1 where it is not")
    if ABSENT not in present:
        raise VoxSegError(f"{name} has no 'absent' strokes; paint with label 1 where the "
                          "class is not, and 2 where it is")


def check_regression(target, spatial_shape: Sequence[int], mask=None, *,
                     name: str = "target") -> np.ndarray:
    """Check a regression target and return it as float32 ``(1, Z, Y, X)``, NaN where unknown.

    Without a mask every voxel must be finite. With a mask (nonzero = known), voxels outside it
    may hold anything (NaN included); voxels inside it must be finite.
    """
    array = np.asarray(target)
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if array.dtype.kind not in "biuf":
        raise VoxSegError(f"{name} has dtype {array.dtype}; a regression target holds numbers")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.shape != spatial_shape:
        raise VoxSegError(f"{name} has shape {array.shape} but the image has shape "
                          f"{spatial_shape}; give one value per voxel of the image (Z, Y, X)")
    if array.size == 0:
        raise VoxSegError(f"{name} is empty (shape {array.shape}); give one value per voxel")
    with np.errstate(over="ignore"):  # too large for float32: inf, refused just below
        values = array.astype(np.float32)  # a copy: the caller's array is never changed
    if mask is None:
        bad = ~np.isfinite(values)
        if bad.any():
            raise VoxSegError(f"{name} has {int(bad.sum())} NaN or infinite voxel(s) and no "
                              "mask; give a mask that marks where the target is known (nonzero) "
                              "and leaves those voxels out")
    else:
        known = _as_int_volume(mask, spatial_shape, "mask") != 0
        if not known.any():
            raise VoxSegError("the mask marks no voxel as known; paint (nonzero) where the "
                              "target is known")
        bad = known & ~np.isfinite(values)
        if bad.any():
            raise VoxSegError(f"{name} has {int(bad.sum())} NaN or infinite voxel(s) inside the "
                              "mask; fix those values or leave them out of the mask")
        values[~known] = np.nan
    return values[np.newaxis]


def prepare_target(task: str, labels, spatial_shape: Sequence[int], *,
                   num_classes: int | None = None, mask=None,
                   names: Sequence[str] | None = None,
                   scale: tuple[float, float] | None = None, name: str | None = None) -> Target:
    """Check what to learn for ``task`` and put it in the sampler's shape.

    Regression values are standardized with ``scale`` = (mean, std), by default those of the
    known values (kept in ``Target.scale`` to undo it after prediction). ``name`` (e.g. the
    layer's) is what error messages call the labels or the target."""
    check_task(task)
    if mask is not None and not task_info(task).takes_mask:
        raise VoxSegError(f"a mask is for regression targets; for a {task} task paint 0 where "
                          "nothing is known")
    if task == "multiclass":
        data, k = check_labels(labels, spatial_shape, num_classes=num_classes,
                               name=name or "labels")
        return Target(task, data, k, strata=data)  # the strokes themselves (never written)
    if task == "multilabel":
        data, k = check_multilabel(labels, spatial_shape, num_classes=num_classes, names=names)
        # Balance patches over (class, absent/present); where classes overlap the last wins.
        strata = np.zeros(data.shape[1:], dtype=np.uint16)  # up to 2 * 255 + 2
        for i, volume in enumerate(data):
            annotated = volume > 0
            strata[annotated] = 2 * i + volume[annotated].astype(np.uint16)
        return Target(task, data, k, strata=strata)
    values = check_regression(labels, spatial_shape, mask, name=name or "target")
    known = np.isfinite(values[0])
    if scale is None:
        mean = float(values[0][known].mean(dtype=np.float64))
        std = float(values[0][known].std(dtype=np.float64))
        std = std if std > 1e-12 and np.isfinite(std) else 1.0
    else:
        mean, std = scale
    standardized = ((values - np.float32(mean)) / np.float32(std)).astype(np.float32)
    return Target(task, standardized, 1, strata=known.astype(np.uint8), fill=np.nan,
                  scale=(mean, std))


# ---- strokes: checks, counts and class weights ------------------------------------------
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
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise VoxSegError(
            f"{name} hold negative values (min {int(array.min())}); use 0 for not annotated "
            "and 1..K for classes"
        )
    return array, check_classes_present(np.unique(array), num_classes, name)


def check_classes_present(values, num_classes: int | None, name: str = "labels") -> int:
    """The class count K of strokes holding ``values`` (the distinct values painted, 0
    included or not): at least two classes, at most MAX_CLASSES, none above
    ``num_classes`` when given (else K is the largest painted)."""
    present = np.asarray(values)
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
    return num_classes if num_classes is not None else largest


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


def no_weights(spec) -> bool:
    """Whether a class-weight spec asks for no weights (None, "" or "none")."""
    return spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none"))


def check_weights_allowed(spec, task: str) -> None:
    """Class weights only where the task has classes (not for regression)."""
    if not no_weights(spec) and not task_info(task).has_classes:
        raise VoxSegError(f"a {task} task has no classes, so it takes no class weights "
                          f"({spec!r} given); set class weights to none")


def class_weights(spec, labels: np.ndarray | None, num_classes: int,
                  task: str = "multiclass", *, counts=None) -> np.ndarray | None:
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

    ``counts``: ``(positives, annotated)`` per class, when known, instead of ``labels``
    (multi-class: the strokes per class and their total).
    """
    if no_weights(spec):
        return None
    check_weights_allowed(spec, task)
    if isinstance(spec, str) and spec.strip().lower() in ("auto", "median"):
        kind = spec.strip().lower()
        multilabel = task_info(task).activation == "sigmoid"  # positive weights
        if counts is not None:
            positives, annotated = (np.asarray(c) for c in counts)
        elif labels is None:
            raise VoxSegError(f"class weights {kind!r} need the annotations or their counts")
        elif multilabel:
            flat = np.asarray(labels).reshape(num_classes, -1)
            positives = (flat == 2).sum(axis=1)
            annotated = (flat > 0).sum(axis=1)
        else:
            positives = stroke_counts(labels, num_classes)
            annotated = np.full(num_classes, positives.sum())
        return _computed_weights(kind, positives, annotated, multilabel=multilabel)
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
