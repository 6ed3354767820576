"""Strokes as they are painted: work in proportion to the stroke, not to the volume.

A painting program tells what a stroke changed (where, the values before, the value after).
:class:`Change` is that, in numpy terms; a :class:`Tally` keeps the voxels per label value of
one annotation volume up to date from changes (what the class weights and the stroke counts
need), and a :class:`StrokeMirror` keeps a training worker's own copy of the annotations up to
date from changes sent to it, so that no thread but the worker copies the volume, and nothing
ever writes into the painted array. When the changes are unknown (the whole array replaced,
an undo), :func:`count_values` counts again, block by block so that it can run in a
background thread, and a mirror copies the array again.

    tally = Tally.of(strokes)                       # once, or in a background thread
    tally.apply([Change.box(key, mask, old, 2)])    # on every stroke: O(stroke)
    tally.counts                                    # {value: voxels}
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .errors import VoxSegError
from .targets import ABSENT, PRESENT, check_classes_present, check_layer_present, class_weights

_CHUNK = 1 << 21  # voxels counted at once (a few ms): a background count lets others run


@dataclass(frozen=True)
class Change:
    """One edit of an annotation volume: ``where`` is either a box (a tuple of slices) with an
    optional boolean ``mask`` inside it (None: the whole box), or a tuple of index arrays
    (``mask`` None); ``old`` holds the values there before, ``new`` the value(s) after."""

    where: tuple
    mask: np.ndarray | None
    old: np.ndarray
    new: object  # a scalar, or one value per changed voxel

    @classmethod
    def box(cls, key: tuple, mask: np.ndarray | None, old, new) -> Change:
        return cls(tuple(key), None if mask is None else np.asarray(mask, bool),
                   np.asarray(old), new)

    @classmethod
    def points(cls, indices: tuple, old, new) -> Change:
        """Voxels by index; a voxel given twice counts once, with its last new value."""
        indices = tuple(np.asarray(i).ravel() for i in indices)
        old, new = np.asarray(old).ravel(), np.asarray(new)
        if indices and indices[0].size > 1:
            rows = np.stack(indices, axis=1)[::-1]
            _, last = np.unique(rows, axis=0, return_index=True)
            keep = np.sort(rows.shape[0] - 1 - last)
            indices = tuple(i[keep] for i in indices)
            old = old[keep] if old.size > 1 else old
            new = new.ravel()[keep] if new.ndim else new
        return cls(indices, None, old, new)

    @property
    def is_box(self) -> bool:
        return all(isinstance(k, slice) for k in self.where)

    def new_counts(self) -> Counter:
        new = np.asarray(self.new)
        if new.ndim == 0:
            return Counter({int(new): int(self.old.size)})
        return _count(new)

    def apply(self, array: np.ndarray) -> None:
        """Make the same edit in ``array`` (a copy of the painted volume)."""
        if not self.is_box:
            array[self.where] = self.new
        elif self.mask is None:
            array[self.where] = self.new
        else:
            region = array[self.where]  # a view: basic slicing
            region[self.mask] = self.new


def _count(values: np.ndarray) -> Counter:
    values = np.asarray(values).ravel()
    if values.size == 0:
        return Counter()
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        bins = np.bincount(values, minlength=1)
        found = np.flatnonzero(bins)
        return Counter(dict(zip(found.tolist(), bins[found].tolist())))
    found, counts = np.unique(values, return_counts=True)
    return Counter(dict(zip(found.tolist(), counts.tolist())))


def count_values(array, should_stop=None) -> Counter | None:
    """Voxels per value of ``array``, a few slices at a time (None if ``should_stop()``
    turned true on the way)."""
    array = np.asarray(array)
    if array.ndim == 0:
        return _count(array)
    per = max(1, _CHUNK // max(1, array[0].size))
    counts: Counter[int] = Counter()
    for start in range(0, array.shape[0], per):
        if should_stop is not None and should_stop():
            return None
        counts.update(_count(array[start:start + per]))
    return counts


class Tally:
    """Voxels per label value of one annotation volume, kept from its changes. ``version``
    grows with every change, so that a background recount started before a change can be
    told stale (:meth:`replace` refuses it)."""

    def __init__(self, counts: Counter | None = None):
        self.counts = Counter(counts or {})
        self.version = 0

    @classmethod
    def of(cls, array) -> Tally:
        return cls(count_values(array))

    def apply(self, changes) -> None:
        for change in changes:
            self.counts.subtract(_count(change.old))
            self.counts.update(change.new_counts())
        self.counts = Counter({k: v for k, v in self.counts.items() if v})
        self.version += 1

    def replace(self, counts: Counter, version: int) -> bool:
        """Take a recount started at ``version``; False (and kept as is) if changed since."""
        if version != self.version:
            return False
        self.counts = Counter({k: v for k, v in counts.items() if v})
        return True

    def values(self) -> np.ndarray:
        """The values present (painted or not), sorted."""
        return np.array(sorted(self.counts), dtype=np.int64)

    def count(self, value: int) -> int:
        return int(self.counts.get(value, 0))


class StrokeMirror:
    """A worker's own copy of an annotation volume, kept current from the changes the main
    thread sends (:meth:`push`, O(stroke)). :meth:`resync` asks for a fresh copy of the whole
    array (the changes are unknown), made by the worker at its next :meth:`take`. Changes sent
    since are replayed in order after the copy: replaying an edit the copy already holds
    changes nothing, so a copy taken while the user paints ends up right."""

    def __init__(self, source):
        self._source = source  # () -> the painted array (read, never written)
        self._lock = threading.Lock()
        self._pending: list[Change] = []
        self._resync = True
        self._copy: np.ndarray | None = None

    def push(self, changes) -> None:
        with self._lock:
            self._pending.extend(changes)

    def resync(self) -> None:
        """The array changed in ways not told: copy it whole at the next take. Changes sent
        before now are dropped (the copy holds them, or an undo took them back); changes sent
        after are replayed on the copy."""
        with self._lock:
            self._resync, self._pending = True, []

    def take(self) -> np.ndarray | None:
        """(Worker) a new array with the strokes as they are now, or None if nothing changed
        since the last take. The first take always gives one."""
        with self._lock:
            resync, changes = self._resync, self._pending
            self._resync, self._pending = False, []
        before = current = self._copy
        if resync or current is None:
            current = self._copy = np.array(self._source(), copy=True)
        for change in changes:
            change.apply(current)
        if before is not None and not changes and (
                not resync or np.array_equal(before, current)):
            return None  # nothing new (a copy asked for after the view moved, say)
        return current.copy()

    def current(self) -> np.ndarray:
        """(Worker) a new array with the strokes as of the last :meth:`take`."""
        if self._copy is None:
            self.take()
        assert self._copy is not None  # take() always leaves a copy
        return self._copy.copy()


def stroke_summary(task: str, tallies, names, *, num_classes: int | None = None,
                   weights="none") -> tuple[np.ndarray | None, list]:
    """``(class weights or None, stroke counts)`` from the tallies of the annotation layers
    (one for multi-class, one per class for multi-label), checked as training checks the
    strokes (the same one-line :class:`VoxSegError`). Counts: per class, or per class
    ``(absent, present)``."""
    if task == "multiclass":
        tally, name = tallies[0], names[0]
        values = tally.values()
        if values.size and values[0] < 0:
            raise VoxSegError(f"{name} hold negative values (min {int(values[0])}); use 0 for "
                              "not annotated and 1..K for classes")
        k = check_classes_present(values, num_classes, name)
        counts = np.array([tally.count(c) for c in range(1, k + 1)], dtype=np.int64)
        return class_weights(weights, None, k, task,
                             counts=(counts, np.full(k, counts.sum()))), counts.tolist()
    for tally, name in zip(tallies, names):
        check_layer_present(tally.values(), name)
    if num_classes is not None and len(tallies) != int(num_classes):
        raise VoxSegError(f"{len(tallies)} annotation layer(s) given but the model has "
                          f"{num_classes} classes; choose {num_classes} layers, one per class")
    absent = np.array([t.count(ABSENT) for t in tallies], dtype=np.int64)
    present = np.array([t.count(PRESENT) for t in tallies], dtype=np.int64)
    return (class_weights(weights, None, len(tallies), task, counts=(present, present + absent)),
            [[int(a), int(p)] for a, p in zip(absent, present)])
