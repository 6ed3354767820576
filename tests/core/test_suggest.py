"""Where to paint next: slices ranked by uncertainty, stage disagreement and distance from the
painted ones; spread over the volume; from the command line and Python."""

import json

import numpy as np
import pytest
from helpers import TINY, one_line_error, run_cli

from napari_voxseg.core.suggest import (
    disagreement,
    entropy,
    painted_slices,
    rank_slices,
    suggest,
    uncertain_region,
)
from napari_voxseg.core.train import TrainConfig, train


def _volume(n=50, peaks=None):
    u = np.full((n, 8, 8), 0.05, np.float32)
    for z, value in (peaks or {}).items():
        u[z] = value
    return u


def test_the_most_uncertain_slice_comes_first():
    s = rank_slices(_volume(peaks={7: 0.9, 30: 0.5}), top=2)
    assert [x.slice for x in s] == [7, 30]
    assert s[0].uncertainty == pytest.approx(0.9) and s[0].disagreement is None
    assert s[0].nearest_painted is None and s[0].score >= s[1].score


def test_painted_slices_and_their_neighbours_rank_low():
    s = rank_slices(_volume(peaks={20: 0.9, 21: 0.9, 40: 0.4}), painted=[20], top=3)
    assert not {20, 21} & {x.slice for x in s}  # painted, and right beside a painted slice
    assert s[0].nearest_painted >= 3 and s[0].uncertainty < 0.9


def test_suggestions_spread_instead_of_naming_neighbours():
    s = rank_slices(_volume(peaks={10: 0.9, 11: 0.88, 12: 0.87, 40: 0.5}), top=4)
    assert s[0].slice == 11  # the middle of the doubtful stretch
    assert all(abs(a.slice - b.slice) >= 3 for a in s for b in s if a is not b)
    assert 40 in [x.slice for x in s]  # not five slices around the first


def test_a_doubtful_stretch_beats_a_lone_doubtful_slice_and_edges_count_less():
    u = _volume(n=60, peaks={30: 0.6})
    u[10:16] = 0.4  # six doubtful slices in a row
    assert rank_slices(u, top=1)[0].slice in range(10, 16)
    flat = np.full((40, 4, 4), 0.3, np.float32)
    assert 5 <= rank_slices(flat, top=1)[0].slice <= 34  # strokes there reach both sides


def test_disagreement_adds_to_the_score_and_other_axes_work():
    u = _volume(n=20)
    d = np.zeros_like(u)
    d[:, :, 5] = 0.8  # along X, slice 5
    s = rank_slices(u, d, axis=2, top=1)
    assert s[0].slice == 5 and s[0].axis == 2 and s[0].disagreement == pytest.approx(0.8)
    region = uncertain_region(u + d, s[0])
    assert region[:, :, 5].all() and not region[:, :, :5].any()


def test_entropy_disagreement_and_painted_slices():
    sure = np.zeros((3, 2, 4, 4), np.float32)
    sure[0] = 1
    even = np.full((3, 2, 4, 4), 1 / 3, np.float32)
    assert entropy(sure).max() < 1e-4 and np.allclose(entropy(even), 1, atol=1e-4)
    assert np.allclose(disagreement(sure, sure), 0)
    other = np.zeros_like(sure)
    other[1] = 1
    assert np.allclose(disagreement(sure, other), 1)
    strokes = np.zeros((2, 4, 4), np.uint8)
    strokes[1, 2, 3] = 2
    assert painted_slices(strokes, 0) == [1] and painted_slices(strokes, 2) == [3]
    assert painted_slices(None, 0) == []
    one_line_error(lambda: rank_slices(_volume(), top=0), "--top")


def test_strokes_painted_across_an_axis_do_not_paint_its_slices():
    strokes = np.zeros((20, 32, 32), np.uint8)
    strokes[5, 2:30, 4:28] = 1  # two strokes on Z slices, crossing most Y and X slices
    strokes[9, 3:29, 10] = 2
    assert painted_slices(strokes, 0) == [5, 9]
    assert painted_slices(strokes, 1) == [] and painted_slices(strokes, 2) == []
    s = rank_slices(_volume(n=32), axis=1, painted=painted_slices(strokes, 1), top=5)
    assert len(s) == 5


def test_painted_or_certain_slices_are_never_named():
    assert rank_slices(np.zeros((6, 4, 4), np.float32), top=3) == []
    s = rank_slices(_volume(n=4), painted=[0, 1, 2, 3], top=2)
    assert s == []


@pytest.fixture(scope="module")
def model(small_volume):
    image, _, strokes = small_volume
    return train(image, strokes, TrainConfig(**TINY, two_stage=True)).model


def test_suggest_predicts_and_ranks(model, small_volume):
    image, _, strokes = small_volume
    result = suggest(model, image, strokes, top=4)
    assert result.painted == [5, 9]
    slices = [s.slice for s in result.suggestions]
    assert len(slices) == 4 and len(set(slices)) == 4 and not {5, 9} & set(slices)
    assert all(s.disagreement is not None for s in result.suggestions)  # two stages
    assert result.uncertainty.shape == image.shape
    assert 0 <= result.uncertainty.min() and result.uncertainty.max() <= 2
    one_line_error(lambda: suggest(model, image, strokes[:8]), "labels have shape")
    one_line_error(lambda: suggest(model, image, axis=3), "axis")


def test_suggest_refuses_regression(small_volume):
    image, truth, _ = small_volume
    target = truth.astype(np.float32)
    model = train(image, target, TrainConfig(**TINY, task="regression")).model
    one_line_error(lambda: suggest(model, image), "regression", "multi-class")


def test_cli_suggest(trained, files):
    proc = run_cli("suggest", trained, files / "image.tif", "--labels", files / "strokes.tif",
                   "--top", 3, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["painted"] == [5, 9] and len(out["suggestions"]) == 3
    assert {"slice", "score", "uncertainty", "disagreement", "nearest_painted"} <= set(
        out["suggestions"][0])
    proc = run_cli("suggest", trained, files / "image.tif")
    assert proc.returncode == 0 and "paint next" in proc.stdout
    proc = run_cli("suggest", trained, files / "image.tif", "--labels", files / "truth.npy",
                   "--top", "0")
    assert proc.returncode == 2 and "--top" in proc.stderr and "Traceback" not in proc.stderr
