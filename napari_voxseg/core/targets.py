"""What the network learns from, for each task, checked and put in one shape for the sampler.

- ``multiclass``: labels ``(Z, Y, X)``, 0 = not annotated, 1..K = classes (check_labels).
- ``multilabel``: one annotation volume per class, given as ``(K, Z, Y, X)`` or a list of K
  ``(Z, Y, X)`` arrays; in each 0 = not annotated, 1 = absent, 2 = present.
- ``regression``: a float target ``(Z, Y, X)`` and an optional mask (nonzero = known).

:func:`prepare_target` returns a :class:`Target`: the array the loss sees, plus ``strata``, a
``(Z, Y, X)`` int map that the patch sampler balances over (0 = nothing to learn there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .data import check_labels, stroke_counts
from .errors import VoxSegError
from .losses import check_task

PRESENT, ABSENT = 2, 1


@dataclass
class Target:
    task: str
    data: np.ndarray  # (Z,Y,X) int | (K,Z,Y,X) uint8 | (1,Z,Y,X) float32, NaN = unknown
    num_outputs: int
    strata: np.ndarray  # (Z, Y, X) int32, 0 = not annotated
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
        present = np.unique(array)
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
        checked.append(array.astype(np.uint8, copy=False))
    if num_classes is not None and len(checked) != int(num_classes):
        raise VoxSegError(f"{len(checked)} annotation layer(s) given but the model has "
                          f"{num_classes} classes; choose {num_classes} layers, one per class")
    return np.stack(checked), len(checked)


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
    if mask is not None and task != "regression":
        raise VoxSegError(f"a mask is for regression targets; for a {task} task paint 0 where "
                          "nothing is known")
    if task == "multiclass":
        data, k = check_labels(labels, spatial_shape, num_classes=num_classes,
                               name=name or "labels")
        return Target(task, data, k, strata=np.asarray(data, dtype=np.int32))
    if task == "multilabel":
        data, k = check_multilabel(labels, spatial_shape, num_classes=num_classes, names=names)
        # Balance patches over (class, absent/present); where classes overlap the last wins.
        strata = np.zeros(data.shape[1:], dtype=np.int32)
        for i, volume in enumerate(data):
            annotated = volume > 0
            strata[annotated] = 2 * i + volume[annotated].astype(np.int32)
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
    return Target(task, standardized, 1, strata=known.astype(np.int32), fill=np.nan,
                  scale=(mean, std))


def boundary_weight_map(reference: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0,
                        voxel_size: Sequence[float] | None = None) -> np.ndarray:
    """Per-voxel loss weights ``1 + w0 * exp(-d^2 / (2 sigma^2))``, after the U-Net paper.

    ``d`` is the distance (in voxels of the finest axis) from each voxel to the nearest voxel of a
    different class in ``reference``: the strokes (0 = not annotated, ignored) or a prediction
    (every voxel labelled). Voxels near where two classes meet weigh up to ``1 + w0``.
    """
    from scipy.ndimage import distance_transform_edt

    reference = np.asarray(reference)
    if not (np.isfinite(w0) and w0 >= 0 and np.isfinite(sigma) and sigma > 0):
        raise VoxSegError(f"boundary weight {w0!r} must be >= 0 and sigma {sigma!r} > 0")
    sampling = None
    if voxel_size is not None:
        v = np.asarray(voxel_size, dtype=np.float64)
        sampling = v / v.min()
    classes = [int(c) for c in np.unique(reference) if c > 0]
    nearest_other = np.full(reference.shape, np.inf, dtype=np.float32)
    if len(classes) >= 2:
        distances = {c: distance_transform_edt(reference != c, sampling=sampling).astype(
            np.float32) for c in classes}
        for c in classes:
            inside = reference == c
            for other in classes:
                if other != c:
                    np.minimum(nearest_other, np.where(inside, distances[other], np.inf),
                               out=nearest_other)
    weights = 1.0 + w0 * np.exp(-(nearest_other.astype(np.float64) ** 2) / (2 * sigma**2))
    return weights.astype(np.float32)
