"""Scores against a ground truth: overlap, surface distances (checked against MONAI) and
objects."""

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_voxseg.core.metrics import class_report, object_f1
from napari_voxseg.core.surface import surface_score


def _blobs(rng, shape):
    return ndimage.gaussian_filter(rng.random(shape), 2) > 0.52


def test_surface_distances_equal_monai_s_on_random_shapes_and_anisotropic_voxels():
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    rng = np.random.default_rng(0)
    for _ in range(8):
        a, b = _blobs(rng, (14, 24, 20)), _blobs(rng, (14, 24, 20))
        spacing = [float(v) for v in rng.uniform(0.3, 3.0, 3)]
        ours = surface_score(a, b, spacing)
        pred, truth = (torch.tensor(m)[None, None].float() for m in (a, b))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd95 = compute_hausdorff_distance(pred, truth, percentile=95, spacing=spacing)
            assd = compute_average_surface_distance(pred, truth, symmetric=True,
                                                    spacing=spacing)
        assert ours.hd95 == pytest.approx(hd95.item(), abs=1e-4)
        assert ours.assd == pytest.approx(assd.item(), abs=1e-4)
        assert ours.note == ""


def test_distances_are_physical_and_the_empty_cases_are_named():
    a = np.zeros((12, 12, 12), bool)
    a[4:8, 4:8, 4:8] = True
    shifted = np.roll(a, 1, axis=0)  # one slice further in Z
    assert surface_score(a, shifted, (3.0, 0.5, 0.5)).hd95 == pytest.approx(3.0)
    assert surface_score(a, np.roll(a, 1, axis=2), (3.0, 0.5, 0.5)).hd95 == pytest.approx(0.5)
    assert surface_score(a, a).hd95 == 0 and surface_score(a, a).assd == 0
    empty = np.zeros_like(a)
    both = surface_score(empty, empty)
    assert (both.hd95, both.assd, both.note) == (0.0, 0.0, "both empty")
    assert surface_score(empty, a).note == "prediction empty"
    assert surface_score(a, empty).note == "ground truth empty"
    assert np.isinf(surface_score(a, empty).hd95)


def test_the_class_report_has_every_score():
    truth = np.ones((8, 16, 16), np.uint8)
    truth[2:6, 4:12, 4:12] = 2
    pred = truth.copy()
    pred[2:6, 4:12, 12:14] = 2  # 64 voxels too many
    report = class_report(pred, truth, (2.0, 1.0, 1.0))
    row = report[2]
    assert row["recall"] == 1.0 and row["precision"] == pytest.approx(256 / 320)
    assert row["dice"] == pytest.approx(2 * 256 / (256 + 320))
    assert row["iou"] == pytest.approx(256 / 320)
    assert row["hd95"] == pytest.approx(2.0) and 0 < row["assd"] < 2.0
    multilabel = class_report(np.stack([pred, truth]), np.stack([truth, truth]),
                              multilabel=True, surface=False)
    assert set(multilabel) == {1, 2} and multilabel[2]["dice"] == 1.0
    assert "hd95" not in multilabel[1]
    wide = class_report(pred.astype(np.uint64), truth.astype(np.uint64), surface=False)
    assert wide[2]["dice"] == pytest.approx(row["dice"])  # uint64 labels (zarr's) work


def test_object_f1_matches_objects_at_iou_one_half():
    truth = np.zeros((10, 20, 20), np.uint16)
    truth[1:4, 1:6, 1:6], truth[5:9, 10:15, 10:15], truth[1:3, 15:18, 1:4] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[1:4, 1:6, 1:7] = 10  # IoU 75/90: a match
    pred[5:9, 10:15, 10:12] = 20  # IoU 40/100: no match
    pred[8, 1, 18] = 30  # nothing there
    score = object_f1(pred, truth)
    assert (score["matched"], score["predicted"], score["true"]) == (1, 3, 3)
    assert score["f1"] == pytest.approx(1 / 3)
    assert object_f1(truth, truth)["f1"] == 1.0
    assert object_f1(np.zeros_like(truth), np.zeros_like(truth))["f1"] == 1.0
