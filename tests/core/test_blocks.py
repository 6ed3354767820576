"""Prediction at scale: block-wise from zarr/dask into zarr (equal to predicting whole), on a
dask LocalCluster, probabilities and uncertainty, cancel, and what is refused."""

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from helpers import TINY as BASE
from helpers import drain

from napari_voxseg.core import TrainConfig, VoxSegError, iter_predict, run_to_end, train
from napari_voxseg.core.blocks import (
    iter_predict_blocks,
    open_zarr,
    open_zarr_levels,
    predict_blocks,
)

TINY = {**BASE, "iterations": 6, "batch_size": 2, "num_threads": 1}
BLOCK = (6, 20, 12)  # blocks that cut through tiles on purpose


@pytest.fixture(scope="module")
def model_and_image(small_volume):
    image, _, strokes = small_volume
    return train(image, strokes, TrainConfig(**TINY)).model, image


@pytest.fixture(scope="module")
def whole(model_and_image):
    model, image = model_and_image
    return run_to_end(iter_predict(model, image, probabilities=True, uncertainty=True))


def as_zarr(path, array, chunks=(4, 8, 8)):
    store = zarr.open_array(str(path), mode="w", shape=array.shape, chunks=chunks,
                            dtype=array.dtype)
    store[:] = array
    return path


def test_zarr_blocks_equal_the_whole_prediction(model_and_image, whole, tmp_path):
    model, image = model_and_image
    events, written = drain(iter_predict_blocks(
        model, as_zarr(tmp_path / "image.zarr", image), tmp_path / "labels.zarr",
        probabilities=tmp_path / "p.zarr", uncertainty=tmp_path / "u.zarr", block_shape=BLOCK,
        voxel_size=(2, 1, 1)))
    assert [e.done for e in events] == list(range(1, 3 * 2 * 3 + 1))  # 16/6, 32/20, 32/12
    assert set(written) == {"labels", "probabilities", "uncertainty"}
    labels = open_zarr(tmp_path / "labels.zarr")
    assert labels.chunks == BLOCK and open_zarr_levels(tmp_path / "labels.zarr")[1][
        "voxel_size"] == (2, 1, 1)
    # Stage 1's filters follow the image's voxel size: the whole at the same voxel size.
    whole = run_to_end(iter_predict(model, image, probabilities=True, uncertainty=True,
                                    voxel_size=(2, 1, 1)))
    np.testing.assert_array_equal(labels[:], whole.labels)
    # Equal up to the order of float sums (and float16 sums where a GPU runs it).
    np.testing.assert_allclose(open_zarr(tmp_path / "p.zarr")[:], whole.probabilities,
                               atol=2e-5)
    np.testing.assert_allclose(open_zarr(tmp_path / "u.zarr")[:], whole.uncertainty,
                               atol=2e-5)
    # No temporary store is left beside the outputs.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.zarr", "labels.zarr",
                                                          "p.zarr", "u.zarr"]


def test_dask_and_numpy_sources_give_the_same(model_and_image, whole, tmp_path):
    model, image = model_and_image
    lazy = da.from_array(image, chunks=(8, 16, 16))
    predict_blocks(model, lazy, tmp_path / "a.zarr", block_shape=BLOCK)
    predict_blocks(model, image[np.newaxis], tmp_path / "b.zarr", block_shape=(16, 32, 32))
    np.testing.assert_array_equal(open_zarr(tmp_path / "a.zarr")[:], whole.labels)
    np.testing.assert_array_equal(open_zarr(tmp_path / "b.zarr")[:], whole.labels)


def test_a_local_cluster_gives_the_same(model_and_image, whole, tmp_path):
    distributed = pytest.importorskip("distributed")
    model, image = model_and_image
    source = as_zarr(tmp_path / "image.zarr", image)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        predict_blocks(model, source, tmp_path / "labels.zarr", block_shape=BLOCK,
                       uncertainty=tmp_path / "u.zarr", client=client)
    np.testing.assert_array_equal(open_zarr(tmp_path / "labels.zarr")[:], whole.labels)
    np.testing.assert_allclose(open_zarr(tmp_path / "u.zarr")[:], whole.uncertainty,
                               atol=1e-6)


def test_cancel_stops_early_and_leaves_nothing(model_and_image, tmp_path):
    model, image = model_and_image
    blocks = []
    gen = iter_predict_blocks(model, image, tmp_path / "labels.zarr", block_shape=BLOCK,
                              should_stop=lambda: len(blocks) >= 2)
    while True:
        try:
            blocks.append(next(gen))
        except StopIteration as stop:
            assert stop.value == {}
            break
    assert len(blocks) == 2 and list(tmp_path.iterdir()) == []
    # In memory, too: a cancelled prediction stops after the batch in flight.
    batches = []
    gen = iter_predict(model, image, batch_size=1, should_stop=lambda: len(batches) >= 3)
    while True:
        try:
            batches.append(next(gen))
        except StopIteration as stop:
            assert stop.value.cancelled and stop.value.labels is None
            break
    assert len(batches) == 3 < batches[-1].total


def test_multilabel_and_regression_blocks(small_volume, tmp_path):
    image, truth, strokes = small_volume
    ml = [np.where(strokes == 0, 0, np.where(strokes == c, 2, 1)).astype(np.uint8)
          for c in (1, 2)]
    model = train(image, ml, TrainConfig(**TINY, task="multilabel")).model
    predict_blocks(model, image, tmp_path / "ml.zarr", block_shape=BLOCK)
    expected = run_to_end(iter_predict(model, image)).labels
    np.testing.assert_array_equal(open_zarr(tmp_path / "ml.zarr")[:], expected)

    target = truth.astype(np.float32) * 3
    model = train(image, target, TrainConfig(**TINY, task="regression")).model
    predict_blocks(model, image, tmp_path / "r.zarr", block_shape=BLOCK)
    values = open_zarr(tmp_path / "r.zarr")[:]
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, run_to_end(iter_predict(model, image)).values,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(VoxSegError, match="not probabilities"):
        predict_blocks(model, image, tmp_path / "r2.zarr", uncertainty=tmp_path / "u.zarr")


def test_a_batch_of_one_tile_gives_the_same_result(model_and_image, whole):
    model, image = model_and_image
    single = run_to_end(iter_predict(model, image, batch_size=1, probabilities=True))
    np.testing.assert_array_equal(single.labels, whole.labels)
    np.testing.assert_allclose(single.probabilities, whole.probabilities, atol=1e-5)


def test_uncertainty_is_the_normalized_entropy(model_and_image, whole):
    p = np.clip(whole.probabilities, 1e-7, 1 - 1e-7)
    expected = -(p * np.log(p)).sum(0) / np.log(p.shape[0])
    np.testing.assert_allclose(whole.uncertainty, expected, atol=1e-5)
    assert whole.uncertainty.min() >= 0 and whole.uncertainty.max() <= 1


def test_bad_block_inputs_are_refused_and_leave_nothing(model_and_image, tmp_path):
    model, image = model_and_image
    broken = image.copy()
    broken[15, 31, 31] = np.nan
    cases = [
        (dict(source=broken, out=tmp_path / "a.zarr"), "NaN"),
        (dict(source=np.stack([image, image]), out=tmp_path / "a.zarr"), "channel"),
        (dict(source=image, out=tmp_path / "a.tif"), "zarr stores"),
        (dict(source=image[0], out=tmp_path / "a.zarr"), "2D"),
        (dict(source=tmp_path / "missing.zarr", out=tmp_path / "a.zarr"), "does not exist"),
        (dict(source=image, out=tmp_path / "a.zarr", block_shape=(0, 4, 4)), "block shape"),
    ]
    for kwargs, fragment in cases:
        with pytest.raises(VoxSegError, match=fragment):
            predict_blocks(model, kwargs.pop("source"), kwargs.pop("out"), **kwargs)
    (tmp_path / "empty.zarr").mkdir()
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    for name in ("empty.zarr", "group.zarr"):
        with pytest.raises(VoxSegError, match="zarr"):
            predict_blocks(model, tmp_path / name, tmp_path / "a.zarr")
    assert not (tmp_path / "a.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_constant_network_has_no_seams_between_blocks(tmp_path):
    class Constant(torch.nn.Module):
        def __init__(self, probs):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.log(torch.tensor(probs)))
            self.config = {"architecture": {"in_channels": 1, "num_classes": 3, "depth": 2},
                           "normalization": {"low": 1.0, "high": 99.0},
                           "patch_size": [8, 16, 16]}

        def forward(self, x):
            return self.logits.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, *x.shape[2:])

    image = np.random.default_rng(0).random((21, 45, 37)).astype(np.float32)
    predict_blocks(Constant([0.2, 0.7, 0.1]), image, tmp_path / "l.zarr",
                   probabilities=tmp_path / "p.zarr", block_shape=(5, 11, 13))
    probs = open_zarr(tmp_path / "p.zarr")[:]
    np.testing.assert_allclose(probs, np.broadcast_to(
        np.array([0.2, 0.7, 0.1], np.float32)[:, None, None, None], probs.shape), rtol=1e-5)
    assert (open_zarr(tmp_path / "l.zarr")[:] == 2).all()


def test_bfloat16_prediction_agrees_with_float32(sample):
    model = train(sample.image, sample.strokes,
                  TrainConfig(iterations=60, batch_size=2, num_threads=2)).model
    single = run_to_end(iter_predict(model, sample.image, precision="float32",
                                     probabilities=True))
    half = run_to_end(iter_predict(model, sample.image, precision="bfloat16",
                                   probabilities=True))
    assert (half.labels == single.labels).mean() > 0.995
    assert np.abs(half.probabilities - single.probabilities).mean() < 0.01
    with pytest.raises(VoxSegError, match="precision"):
        run_to_end(iter_predict(model, sample.image, precision="float8"))


def test_float16_blend_sums_cover_every_voxel(model_and_image, whole, monkeypatch):
    """The GPU keeps the blend sums in float16: a voxel covered only by tile corners, where the
    Gaussian window is far below float16's range, still gets its weight (no 0 / 0)."""
    from napari_voxseg.core import infer

    model, image = model_and_image
    monkeypatch.setattr(infer, "half_sums", lambda device, task: task != "regression")
    half = run_to_end(iter_predict(model, image, probabilities=True, uncertainty=True))
    assert np.isfinite(half.probabilities).all() and np.isfinite(half.uncertainty).all()
    np.testing.assert_allclose(half.probabilities.sum(0), 1.0, atol=5e-3)
    assert np.abs(half.probabilities - whole.probabilities).max() < 0.01
    assert (half.labels == whole.labels).mean() > 0.999


def test_out_of_memory_halves_the_batch(model_and_image, whole):
    model, image = model_and_image

    class Tight(torch.nn.Module):
        """The model, on a device with room for two tiles at a time."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.config, self.batches = inner, inner.config, []
            self.stage1 = inner.stage1  # two stages: the input gains stage 1's probabilities

        def forward(self, x):
            if x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            self.batches.append(x.shape[0])
            return self.inner(x)

    tight = Tight(model)
    result = run_to_end(iter_predict(tight, image, batch_size=8))
    np.testing.assert_array_equal(result.labels, whole.labels)
    assert max(tight.batches) == 2
