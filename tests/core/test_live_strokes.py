"""Strokes kept from their changes (issue 18): tallies and a worker's mirror equal a full
recount / a fresh copy after random strokes, and the summary checks as training does."""

from __future__ import annotations

import numpy as np
import pytest

from napari_voxseg.core import VoxSegError, class_weights
from napari_voxseg.core.live_strokes import (
    Change,
    StrokeMirror,
    Tally,
    count_values,
    stroke_summary,
)
from napari_voxseg.core.targets import stroke_counts


def random_change(array: np.ndarray, rng) -> Change:
    """Paint one random edit into ``array`` (in place), as napari records it: a masked box,
    a whole box, or points."""
    kind = rng.integers(3)
    value = int(rng.integers(0, 4))
    if kind == 2:
        indices = tuple(rng.integers(0, n, 30) for n in array.shape)
        old = array[indices].copy()
        array[indices] = value
        return Change.points(indices, old, value)
    start = [int(rng.integers(0, n - 4)) for n in array.shape]
    key = tuple(slice(s, s + int(rng.integers(1, 5))) for s in start)
    if kind == 0:
        mask = rng.random(array[key].shape) < 0.5
        old = array[key][mask].copy()
        array[key][mask] = value
        return Change.box(key, mask, old, value)
    old = array[key].copy()
    array[key] = value
    return Change.box(key, None, old, value)


def test_a_tally_kept_from_changes_equals_a_full_recount():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 3, (12, 20, 24)).astype(np.uint8)
    tally = Tally.of(array)
    for _ in range(200):
        tally.apply([random_change(array, rng)])
    assert tally.counts == count_values(array)
    expected = np.bincount(array.ravel(), minlength=4)
    assert [tally.count(v) for v in range(4)] == expected.tolist()


def test_a_recount_started_before_a_change_is_refused():
    array = np.zeros((4, 5, 6), np.uint8)
    tally = Tally.of(array)
    started = tally.version
    array[0, 0, :3] = 2
    tally.apply([Change.points((np.zeros(3, int), np.zeros(3, int), np.arange(3)),
                               np.zeros(3, np.uint8), 2)])
    assert not tally.replace(count_values(np.zeros((4, 5, 6), np.uint8)), started)
    assert tally.count(2) == 3


def test_counting_works_on_any_integer_type_and_can_stop():
    array = np.array([[[-1, 70000, 0, 0]]], dtype=np.int32)
    assert count_values(array) == {-1: 1, 70000: 1, 0: 2}
    assert count_values(np.zeros((50, 2, 2), np.uint8), should_stop=lambda: True) is None


def test_a_mirror_follows_the_changes_and_never_writes_the_source():
    rng = np.random.default_rng(1)
    painted = rng.integers(0, 3, (10, 16, 16)).astype(np.uint8)
    mirror = StrokeMirror(lambda: painted)
    first = mirror.take()
    assert np.array_equal(first, painted) and first is not painted
    assert mirror.take() is None  # nothing new
    for _ in range(50):
        mirror.push([random_change(painted, rng)])
    before = painted.copy()
    taken = mirror.take()
    assert np.array_equal(taken, painted) and np.array_equal(painted, before)
    taken[:] = 9  # the worker's array is its own
    assert mirror.current().max() < 9
    # A fresh copy asked for (the changes unknown, say an undo) that holds nothing new.
    mirror.resync()
    assert mirror.take() is None
    painted[0, 0, 0] = 3  # an undo: changed with no change told
    mirror.resync()
    assert mirror.take()[0, 0, 0] == 3


def test_a_change_replayed_on_a_copy_that_holds_it_changes_nothing():
    """A copy taken while the user paints may already hold a stroke whose changes arrive
    later: replaying them gives the same array."""
    rng = np.random.default_rng(2)
    painted = np.zeros((6, 8, 8), np.uint8)
    mirror = StrokeMirror(lambda: painted)
    changes = [random_change(painted, rng) for _ in range(20)]
    mirror.resync()
    mirror.push(changes)  # the copy is taken after the strokes: they are in it already
    assert np.array_equal(mirror.take(), painted)


def test_the_summary_checks_and_weighs_as_training_does():
    labels = np.zeros((4, 6, 6), np.uint8)
    labels[0, :2] = 1
    labels[1, :1] = 2
    labels[2, 0, :3] = 3
    weights, counts = stroke_summary("multiclass", [Tally.of(labels)], ["strokes"],
                                     weights="auto")
    assert counts == stroke_counts(labels, 3).tolist()
    assert np.allclose(weights, class_weights("auto", labels, 3))
    with pytest.raises(VoxSegError, match="only one class"):
        stroke_summary("multiclass", [Tally.of(np.where(labels == 1, 1, 0))], ["strokes"])
    with pytest.raises(VoxSegError, match="class count is 2"):
        stroke_summary("multiclass", [Tally.of(labels)], ["strokes"], num_classes=2)
    layers = [np.where(labels == 1, 2, np.where(labels > 1, 1, 0)).astype(np.uint8),
              np.where(labels == 3, 2, np.where(labels == 1, 1, 0)).astype(np.uint8)]
    weights, counts = stroke_summary("multilabel", [Tally.of(x) for x in layers], ["a", "b"],
                                     weights="auto")
    assert np.allclose(weights, class_weights("auto", np.stack(layers), 2, task="multilabel"))
    assert counts == [[int((x == 1).sum()), int((x == 2).sum())] for x in layers]
    with pytest.raises(VoxSegError, match="b has no 'present' strokes"):
        stroke_summary("multilabel", [Tally.of(layers[0]), Tally.of(layers[0] == 2)],
                       ["a", "b"])
