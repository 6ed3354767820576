"""Stage 1 (forest + MLP): the forest's arrays predict as sklearn does, a fitted stage 1 saves
to safetensors and loads without pickle or scikit-learn, it segments the sample, blocks equal
the whole, and bad strokes are refused with one line."""

import json
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import one_line_error
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from napari_voxseg.core import forest as fo
from napari_voxseg.core.metrics import dice_per_class
from napari_voxseg.core.stage1 import Stage1, fit_stage1

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _noisy(n=900, features=6, classes=3, seed=0):
    """Overlapping classes, so the trees grow deep and uneven."""
    rng = np.random.default_rng(seed)
    y = rng.integers(1, classes + 1, n)
    x = rng.normal(size=(n, features)).astype(np.float32) + 0.7 * y[:, None]
    return x, y


@pytest.fixture(scope="module")
def fitted(sample):
    began = time.perf_counter()
    model = fit_stage1(sample.image[None], sample.strokes, sample.voxel_size)
    return model, time.perf_counter() - began


@pytest.mark.parametrize("device", DEVICES)
def test_forest_arrays_predict_as_sklearn(device):
    from sklearn.ensemble import RandomForestClassifier

    x, y = _noisy()
    model = RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1).fit(x, y)
    forest = fo.export_forest(model)
    assert forest.feature.shape[0] == 20 and forest.value.shape[2] == 3
    assert forest.depths.tolist() == [e.tree_.max_depth for e in model.estimators_]
    assert forest.depth > 8  # deep, uneven trees: the traversal's early-stopping rows matter
    # Test voxels: new ones, the training ones, and ones exactly at (and one float32 step
    # beside) thresholds, where a float32 threshold rounded the wrong way would send them off.
    rng = np.random.default_rng(1)
    tests = [rng.normal(size=(2000, 6)).astype(np.float32) + 1.4, x]
    inner = forest.left != torch.arange(forest.feature.shape[1])
    t, f = forest.threshold[inner].numpy()[:300], forest.feature[inner].numpy()[:300]
    for side in (-np.inf, 0, np.inf):
        edge = x[:len(t)].copy()
        edge[np.arange(len(t)), f] = np.nextafter(t, np.float32(side)) if side else t
        tests.append(edge)
    for test in tests:
        expected = model.predict_proba(test)
        got = forest.predict_proba(torch.from_numpy(test).to(device), chunk=257).cpu().numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # The fitting helper: seeded, capped per class, classes never painted get 0.
    a = fo.fit_forest(x, y, num_classes=4, config=fo.ForestConfig(trees=5, max_per_class=100))
    b = fo.fit_forest(x, y, num_classes=4, config=fo.ForestConfig(trees=5, max_per_class=100))
    pa = a.predict_proba(torch.from_numpy(x))
    torch.testing.assert_close(pa, b.predict_proba(torch.from_numpy(x)), rtol=0, atol=0)
    assert (pa[:, 3] == 0).all() and torch.allclose(pa.sum(1), torch.ones(len(x)))
    keep = fo.subsample(y, 100)
    assert np.bincount(y[keep]).max() == 100 and len(np.unique(y[keep])) == 3


def test_stage1_segments_the_sample_and_blocks_equal_the_whole(sample, fitted):
    model, _ = fitted
    probs = model.predict_proba(sample.image[None])
    assert probs.shape == (3, *sample.image.shape) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    dice = dice_per_class(probs.argmax(0) + 1, sample.ground_truth, [1, 2, 3])
    assert min(dice.values()) > 0.8, dice  # chance is about 1/3
    region = (slice(5, 40), slice(20, 90), slice(3, 64))
    blocks = model.predict_proba(sample.image, region, block=(13, 32, 25),
                                 bounds=_bounds(sample.image))
    whole = probs[(slice(None), *region)]
    # Features of a block equal the whole's to float rounding; a forest split lying within
    # that rounding of a voxel's feature could flip, so allow a handful of voxels.
    assert np.isclose(blocks, whole, rtol=0, atol=1e-5).all(0).mean() > 0.9999
    lazy = model.predict_proba(_Lazy(sample.image), region, block=(13, 32, 25))
    np.testing.assert_array_equal(lazy, blocks)


class _Lazy:
    """A (Z, Y, X) array-like that is not numpy (as a zarr array): read only by slicing."""

    def __init__(self, array):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype

    def __getitem__(self, key):
        return self.array[key].copy()


def _bounds(image):
    from napari_voxseg.core.data import DEFAULT_PERCENTILES
    from napari_voxseg.core.infer import volume_bounds

    return volume_bounds(image[None], *DEFAULT_PERCENTILES)[0]


def test_stage1_round_trips_through_safetensors_without_pickle(sample, fitted, tmp_path,
                                                              monkeypatch):
    model, _ = fitted
    state = model.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    path = tmp_path / "stage1.safetensors"
    save_file(state, str(path), metadata={"stage1": json.dumps(model.metadata())})

    def refuse(*args, **kwargs):
        raise AssertionError("loading stage 1 unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    with safe_open(str(path), "pt") as f:
        metadata = json.loads(f.metadata()["stage1"])
    loaded = Stage1.from_state(load_file(str(path)), metadata)
    assert loaded.metadata() == model.metadata()
    region = (slice(14, 30), slice(0, 96), slice(30, 70))
    np.testing.assert_array_equal(loaded.predict_proba(sample.image, region),
                                  model.predict_proba(sample.image, region))


def test_a_saved_stage1_predicts_without_scikit_learn(small_volume, tmp_path):
    image, _, strokes = small_volume
    model = fit_stage1(image, strokes)
    save_file(model.state_dict(), str(tmp_path / "s.safetensors"),
              metadata={"stage1": json.dumps(model.metadata())})
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "expected.npy", model.predict_proba(image))
    code = f"""if True:
        import json, sys
        sys.modules["sklearn"] = None  # importing it now fails
        import numpy as np
        from safetensors import safe_open
        from safetensors.torch import load_file
        from napari_voxseg.core.stage1 import Stage1
        path = {str(tmp_path / "s.safetensors")!r}
        with safe_open(path, "pt") as f:
            meta = f.metadata()["stage1"]
        model = Stage1.from_state(load_file(path), meta)
        probs = model.predict_proba(np.load({str(tmp_path / "image.npy")!r}))
        np.testing.assert_array_equal(probs, np.load({str(tmp_path / "expected.npy")!r}))
    """
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr


def test_bad_strokes_and_damaged_files_are_refused(small_volume, fitted):
    image, _, strokes = small_volume
    one_line_error(lambda: fit_stage1(image, np.where(strokes == 1, 1, 0)), "two classes")
    one_line_error(lambda: fit_stage1(image, np.zeros_like(strokes)), "no strokes")
    one_line_error(lambda: fit_stage1(image, strokes[:, :10]), "shape")
    one_line_error(lambda: fit_stage1(image, strokes.astype(np.float32)), "integers")
    one_line_error(lambda: fit_stage1(image, strokes, num_classes=1), "num_classes")
    one_line_error(lambda: fit_stage1(image[None, None], strokes), "shape")
    model, _ = fitted
    one_line_error(lambda: model.predict_proba(np.zeros((2, 8, 8, 8), np.float32)), "(1, Z")
    state, meta = model.state_dict(), model.metadata()
    one_line_error(lambda: Stage1.from_state(state, {**meta, "format": "joblib"}), "save")
    one_line_error(lambda: Stage1.from_state(state, {**meta, "num_classes": 4}), "damaged")
    missing = {k: v for k, v in state.items() if k != "forest.threshold"}
    one_line_error(lambda: Stage1.from_state(missing, meta), "threshold", "lacks")
    broken = {**state, "forest.left": state["forest.left"] + 10_000}
    one_line_error(lambda: Stage1.from_state(broken, meta), "damaged")


def test_fit_and_predict_times_on_the_sample(sample, fitted, capsys):
    """Not a benchmark: prints the times (pytest -s) and catches a gross regression."""
    model, fit_s = fitted
    began = time.perf_counter()
    model.predict_proba(sample.image)
    predict_s = time.perf_counter() - began
    with capsys.disabled():
        print(f"\nstage 1 on the sample {sample.image.shape}: fit {fit_s:.2f} s, "
              f"predict {predict_s:.2f} s")
    assert fit_s < 60 and predict_s < 60
