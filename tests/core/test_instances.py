"""Instance labels from a prediction: touching balls become two objects and single ones stay
one, classes and multi-label layers, anisotropic voxels, the block-wise version equal to the
whole volume's up to renumbering (numpy and zarr), and what is refused."""

import subprocess
import sys

import numpy as np
import pytest
import zarr
from helpers import one_line_error

from napari_voxseg.core.instance_blocks import instance_labels_blocks
from napari_voxseg.core.instances import instance_labels


def ellipsoid(shape, centre, radii, spacing=(1.0, 1.0, 1.0), turn=None) -> np.ndarray:
    """The voxels of a solid ellipsoid; centre, radii and spacing in physical units, (Z, Y, X);
    ``turn``: a 3x3 rotation."""
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1).T * np.array(spacing)
    offsets = grid - np.array(centre)
    if turn is not None:
        offsets = offsets @ turn
    return (np.linalg.norm(offsets / np.array(radii), axis=1) <= 1).reshape(shape)


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    return ellipsoid(shape, centre, (radius,) * 3, spacing)


def one_to_one(a: np.ndarray, b: np.ndarray) -> bool:
    """The same labelling up to renumbering: 0 on the same voxels, and each id of ``a`` meets
    one id of ``b`` and the other way round."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]).astype(np.int64), axis=1)
    zero = (pairs[0] == 0) | (pairs[1] == 0)
    return (bool(np.all(pairs[0][zero] == pairs[1][zero]))
            and len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1])


def object_count(objects: np.ndarray) -> int:
    return len(np.unique(objects[objects > 0]))


def test_the_comparison_sees_a_merge_and_a_split():
    a = np.array([0, 1, 1, 2, 2])
    assert one_to_one(a, np.array([0, 7, 7, 3, 3]))
    assert not one_to_one(a, np.array([0, 7, 7, 7, 7]))
    assert not one_to_one(a, np.array([0, 7, 8, 3, 3]))
    assert not one_to_one(a, np.array([5, 7, 7, 3, 3]))


def test_two_touching_balls_become_two_objects_each_mostly_one_ball():
    shape = (32, 32, 48)
    first, second = ball(shape, (16, 16, 14), 8), ball(shape, (16, 16, 26), 8)
    labels = np.where(first | second, 2, 1).astype(np.uint8)  # 12 apart: a neck of r 5.3
    objects = instance_labels(labels, [2])
    assert objects.dtype == np.uint32 and objects.shape == shape
    assert sorted(np.unique(objects)) == [0, 1, 2]
    np.testing.assert_array_equal(objects > 0, first | second)
    for one_ball in (first & ~second, second & ~first):
        ids, counts = np.unique(objects[one_ball], return_counts=True)
        assert counts.max() >= 0.95 * one_ball.sum()
    assert len({np.bincount(objects[b]).argmax() for b in (first, second)}) == 2
    merged = instance_labels(labels, [2], split_touching=False)
    np.testing.assert_array_equal(merged, (first | second).astype(np.uint32))


def test_objects_are_numbered_across_classes_and_unchosen_classes_stay_zero():
    labels = np.ones((12, 20, 30), np.uint8)
    labels[2:6, 2:8, 2:8] = 2
    labels[2:6, 2:8, 8:14] = 3  # touches the class 2 box: still another object
    labels[7:10, 12:18, 20:28] = 2
    labels[7:10, 2:8, 20:28] = 4  # not chosen
    for split in (True, False):
        objects = instance_labels(labels, [2, 3], split_touching=split)
        assert sorted(np.unique(objects)) == [0, 1, 2, 3]
        assert np.all(objects[labels == 4] == 0) and np.all(objects[labels == 1] == 0)
        for value in (1, 2, 3):  # each object lies in one class
            assert len(np.unique(labels[objects == value])) == 1
        assert len({objects[3, 4, 4], objects[3, 4, 10], objects[8, 14, 24]}) == 3


def test_a_single_ball_and_elongated_ellipsoids_stay_one_object():
    shape = (40, 48, 64)
    turn = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    shapes = {
        "ball": ball(shape, (20, 24, 32), 12),
        "ellipsoid 3:1.5:1": ellipsoid(shape, (20, 24, 32), (6, 9, 18)),
        "turned ellipsoid": ellipsoid(shape, (20, 24, 32), (6, 9, 20), turn=turn),
        "cigar": ellipsoid(shape, (20, 24, 32), (5, 5, 26)),
    }
    for name, mask in shapes.items():
        objects = instance_labels(np.where(mask, 2, 1).astype(np.uint8), [2])
        assert object_count(objects) == 1, name


def test_anisotropic_voxels_measure_the_distance_in_physical_units():
    spacing = (2.0, 0.5, 0.5)
    shape = (24, 32, 32)
    first = ball(shape, (19.5, 8, 8), 6, spacing)  # radius 6: 3 slices, 12 pixels
    second = ball(shape, (28.5, 8, 8), 6, spacing)  # 9 apart along Z: a neck
    labels = np.where(first | second, 2, 1).astype(np.uint8)
    objects = instance_labels(labels, [2], voxel_size=spacing)
    assert object_count(objects) == 2
    assert np.bincount(objects[first]).argmax() != np.bincount(objects[second]).argmax()
    assert object_count(instance_labels(labels, [2])) == 1  # as cubes, they look like one disc
    single = np.where(ball(shape, (24, 8, 8), 6, spacing), 2, 1).astype(np.uint8)
    assert object_count(instance_labels(single, [2], voxel_size=spacing)) == 1


def test_a_multilabel_prediction_gives_a_layer_of_objects_per_class():
    shape = (24, 28, 40)
    first, second = ball(shape, (12, 14, 12), 7), ball(shape, (12, 14, 23), 7)
    around = ball(shape, (12, 14, 18), 10)
    present = np.stack([first | second, around, np.ones(shape, bool)])
    labels = np.where(present, 2, 1).astype(np.uint8)  # (K, Z, Y, X), classes may overlap
    objects = instance_labels(labels, [1, 2])
    assert objects.shape == (2, *shape) and objects.dtype == np.uint32
    assert object_count(objects[0]) == 2 and object_count(objects[1]) == 1
    np.testing.assert_array_equal(objects[0] > 0, first | second)
    np.testing.assert_array_equal(objects[1] > 0, around)
    assert not set(np.unique(objects[0])[1:]) & set(np.unique(objects[1])[1:])
    only_second = instance_labels(labels, [2])
    assert only_second.shape == (1, *shape) and object_count(only_second) == 1


def scene() -> np.ndarray:
    """Classes 1 (background), 2 and 3: balls, touching pairs, an ellipsoid, specks, a plate
    (a thin wide object) and class 3 against class 2; objects cross small blocks' borders."""
    shape = (28, 44, 52)
    labels = np.ones(shape, np.uint8)
    for centre, radius in [((8, 10, 10), 6), ((8, 10, 20), 6), ((18, 30, 30), 7),
                           ((20, 30, 42), 6), ((6, 34, 44), 4)]:
        labels[ball(shape, centre, radius)] = 2
    labels[ellipsoid(shape, (19, 12, 34), (5, 7, 14))] = 3
    labels[ball(shape, (20, 10, 16), 5)] = 3
    labels[24:26, 2:40, 2:10] = 2
    rng = np.random.default_rng(0)
    specks = rng.random(shape) < 0.004
    labels[specks] = rng.integers(2, 4, specks.sum())
    return labels


BIG = 10**7  # no component is kept whole for its size


@pytest.mark.parametrize("split, connectivity", [(True, 1), (False, 1), (True, 3), (False, 3)])
def test_block_wise_numpy_equals_the_whole_volume(split, connectivity):
    labels = scene()
    whole = instance_labels(labels, [2, 3], split_touching=split, connectivity=connectivity,
                            max_object_voxels=BIG)
    assert object_count(whole) > 20
    for block, halo in [((8, 12, 16), 4), ((7, 20, 9), 0), ((28, 44, 52), 0)]:
        out = np.full(labels.shape, 99, np.uint32)
        count = instance_labels_blocks(labels, out, [2, 3], split_touching=split,
                                       connectivity=connectivity, block_shape=block,
                                       halo=halo, max_object_voxels=BIG)
        assert one_to_one(out, whole), block
        assert count == out.max() == object_count(out)  # numbered 1..N


def test_block_wise_zarr_equals_the_whole_volume_and_keeps_large_ones_whole(tmp_path):
    labels = scene()
    source = zarr.open_array(str(tmp_path / "labels.zarr"), mode="w", shape=labels.shape,
                             chunks=(8, 12, 16), dtype="uint8")
    source[:] = labels
    out = zarr.open_array(str(tmp_path / "objects.zarr"), mode="w", shape=labels.shape,
                          chunks=(8, 12, 16), dtype="uint32")
    count = instance_labels_blocks(str(tmp_path / "labels.zarr"), out, [2, 3],
                                   block_shape=(8, 12, 16), halo=1)
    limit = (8 + 2) * (12 + 2) * (16 + 2)  # the default: a block with its halo all round
    whole = instance_labels(labels, [2, 3], max_object_voxels=limit)
    assert one_to_one(out[:], whole) and count == object_count(whole)
    # The touching pair's box (13 x 13 x 23 voxels) is over the limit: kept whole.
    assert out[8, 10, 10] == out[8, 10, 20]
    split = instance_labels(labels, [2, 3])
    assert split[8, 10, 10] != split[8, 10, 20]


def test_nothing_of_a_class_gives_no_objects():
    for labels in (np.zeros((5, 6, 7), np.uint8), np.ones((5, 6, 7), np.uint8)):
        assert not instance_labels(labels, [2]).any()
        out = np.ones(labels.shape, np.uint32)
        assert instance_labels_blocks(labels, out, [2], block_shape=(2, 3, 4)) == 0
        assert not out.any()


def test_block_wise_multilabel_into_zarr(tmp_path):
    labels = scene()
    layers = np.stack([np.where(labels == 2, 2, 1), np.where(labels >= 2, 2, 1),
                       np.where(labels == 3, 2, 1)]).astype(np.uint8)
    out = zarr.open_array(str(tmp_path / "objects.zarr"), mode="w", shape=(2, *labels.shape),
                          chunks=(1, 8, 12, 16), dtype="uint32")
    instance_labels_blocks(layers, out, [1, 2], block_shape=(8, 12, 16), halo=4,
                           max_object_voxels=BIG)
    whole = instance_labels(layers, [1, 2], max_object_voxels=BIG)
    assert one_to_one(out[:], whole)


@pytest.mark.parametrize("call, words", [
    (lambda: instance_labels(np.zeros((4, 4, 4), np.uint8), [5], num_classes=3),
     ["class 5", "3 classes", "1 to 3"]),
    (lambda: instance_labels(np.zeros((4, 4, 4), np.uint8), [300]), ["class 300", "uint8"]),
    (lambda: instance_labels(np.ones((2, 4, 4, 4), np.uint8), [3]), ["class 3", "2 class layers"]),
    (lambda: instance_labels(np.zeros((4, 4), np.uint8), [1]), ["2D", "(Z, Y, X)"]),
    (lambda: instance_labels(np.zeros((4, 4, 4), np.float32), [1]), ["float32", "integers"]),
    (lambda: instance_labels(np.zeros((4, 4, 4), np.uint8), []), ["no classes", "[2]"]),
    (lambda: instance_labels(np.zeros((4, 4, 4), np.uint8), [0]), ["class 0", ">= 1"]),
    (lambda: instance_labels(np.zeros((4, 4, 4), np.uint8), [2, 2]), ["twice"]),
    (lambda: instance_labels(np.zeros((4, 4, 4), np.uint8), [2], voxel_size=(1, 0, 1)),
     ["voxel_size", "three sizes > 0"]),
    (lambda: instance_labels(np.zeros((4, 4, 4), np.uint8), [2], connectivity=6),
     ["connectivity 6", "1 (faces)"]),
    (lambda: instance_labels_blocks(np.zeros((4, 4, 4), np.uint8),
                                    np.zeros((4, 4, 4), np.int32), [2]),
     ["int32", "create it as uint32 (4, 4, 4)"]),
    (lambda: instance_labels_blocks(np.zeros((2, 4, 4, 4), np.uint8),
                                    np.zeros((4, 4, 4), np.uint32), [1, 2]),
     ["(4, 4, 4)", "uint32 (2, 4, 4, 4)"]),
    (lambda: instance_labels_blocks(np.zeros((4, 4, 4), np.uint8),
                                    np.zeros((4, 4, 4), np.uint32), [2], block_shape=(4, 0, 4)),
     ["block shape", "(Z, Y, X)"]),
])
def test_bad_input_is_refused_with_one_line(call, words):
    one_line_error(call, *words)


def test_the_modules_load_neither_torch_nor_scikit_image_nor_napari():
    code = ("import sys, napari_voxseg.core.instances, napari_voxseg.core.instance_blocks; "
            "print(','.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.strip().split(","))
    assert not {m.split(".")[0] for m in loaded} & {"torch", "skimage", "napari", "qtpy"}
