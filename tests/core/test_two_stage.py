"""The two-stage engine, the default for multi-class (TrainConfig.two_stage): stage 1's
probabilities as the U-Net's extra inputs and its confident voxels as pseudo-labels; strokes
held out to judge the U-Net against stage 1; saved beside the U-Net, loaded without pickle,
predicted in memory, by region and block-wise."""

import json
import pickle

import numpy as np
import pytest
import torch
from helpers import TINY, drain, one_line_error

from napari_voxseg.core import StoppedEarly, TrainEvent, VoxSegError
from napari_voxseg.core.blocks import open_zarr, predict_blocks
from napari_voxseg.core.checkpoint import load_model, save_model
from napari_voxseg.core.infer import iter_predict, run_to_end
from napari_voxseg.core.train import TrainConfig, iter_train, train
from napari_voxseg.core.two_stage import PSEUDO_WEIGHT, RunStage, training_labels

TWO = dict(TINY, iterations=6, two_stage=True)


@pytest.fixture(scope="module")
def two_stage(small_volume):
    """(events, result, the strokes as given, a copy taken before training)."""
    image, _, strokes = small_volume
    given = strokes.copy()
    events, result = drain(iter_train(image, given, TrainConfig(**TWO)))
    return events, result, given, strokes


def test_two_stage_trains_and_predicts(small_volume, two_stage):
    image, truth, _ = small_volume
    _, result, _, _ = two_stage
    model = result.model
    assert model.config["architecture"]["in_channels"] == 1 + 2  # image + K probabilities
    assert model.config["stage1"]["num_classes"] == 2 and model.stage1.num_classes == 2
    assert model.config["training"]["two_stage"] is True
    out = run_to_end(iter_predict(model, image, probabilities=True))
    assert out.labels.shape == truth.shape and set(np.unique(out.labels)) <= {1, 2}
    assert out.probabilities.shape == (2, *truth.shape)
    # A region, with stage 1's halo read around it, equals that block of the whole.
    region = (slice(3, 11), slice(5, 21), slice(9, 30))
    part = run_to_end(iter_predict(model, image, region=region, probabilities=True))
    np.testing.assert_allclose(part.probabilities, out.probabilities[(slice(None), *region)],
                               atol=1e-5)


def test_pseudo_labels_never_overwrite_or_count_as_strokes(two_stage):
    events, result, given, before = two_stage
    np.testing.assert_array_equal(given, before)  # the strokes given are never modified
    painted = int(np.count_nonzero(before))
    held = result.model.config["training"]["validation"]["held_out_voxels"]
    assert {e.annotated for e in events if isinstance(e, TrainEvent)} == {painted - held}
    counts = [int((before == c).sum()) for c in (1, 2)]
    assert result.model.config["training"]["stroke_counts"] == counts

    strokes = np.array([[[0, 1, 2, 0, 0]]], np.uint8)
    pseudo = np.array([[[2, 2, 1, 1, 0]]], np.uint8)
    stage = RunStage(model=None, probabilities=np.zeros((2, 1, 1, 5), np.float32),
                     pseudo=pseudo)
    labels, weights, _ = training_labels(stage, strokes, None)
    np.testing.assert_array_equal(labels, [[[2, 1, 2, 1, 0]]])
    np.testing.assert_allclose(weights, [[[PSEUDO_WEIGHT, 1, 1, PSEUDO_WEIGHT, 0]]])
    np.testing.assert_array_equal(strokes, [[[0, 1, 2, 0, 0]]])
    boundary = np.full(strokes.shape, 2.0, np.float32)  # boundary_ce's weights multiply
    _, weights, _ = training_labels(stage, strokes, boundary)
    np.testing.assert_allclose(weights, [[[2 * PSEUDO_WEIGHT, 2, 2, 2 * PSEUDO_WEIGHT, 0]]])
    assert training_labels(None, strokes, boundary, strokes) == (strokes, boundary, strokes)
    # Held-out strokes are neither trained on nor sampled around; pseudo-labels fill in.
    stage.held_out = np.array([[[0, 0, 2, 0, 0]]], np.uint8)
    labels, weights, strata = training_labels(stage, strokes, None, strokes)
    np.testing.assert_array_equal(labels, [[[2, 1, 1, 1, 0]]])
    np.testing.assert_allclose(weights, [[[PSEUDO_WEIGHT, 1, PSEUDO_WEIGHT, PSEUDO_WEIGHT, 0]]])
    np.testing.assert_array_equal(strata, [[[0, 1, 0, 0, 0]]])
    np.testing.assert_array_equal(strokes, [[[0, 1, 2, 0, 0]]])


def test_saved_two_stage_model_round_trips_without_pickle(small_volume, two_stage, tmp_path,
                                                          monkeypatch):
    image, _, _ = small_volume
    model = two_stage[1].model
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "model.safetensors", "stage1.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["stage1"] == model.stage1.metadata()

    def refuse(*args, **kwargs):
        raise AssertionError("loading the model unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = load_model(tmp_path / "m")
    monkeypatch.undo()
    a = run_to_end(iter_predict(model, image, probabilities=True))
    b = run_to_end(iter_predict(loaded, image, probabilities=True))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    save_model(loaded, tmp_path / "m", overwrite=True)  # a two-stage folder may be replaced

    (tmp_path / "m" / "stage1.safetensors").unlink()
    one_line_error(lambda: load_model(tmp_path / "m"), "stage1.safetensors")


def test_two_stage_blocks_equal_the_whole(small_volume, two_stage, tmp_path):
    image, _, _ = small_volume
    model = two_stage[1].model
    whole = run_to_end(iter_predict(model, image, probabilities=True))
    predict_blocks(model, image, tmp_path / "l.zarr", probabilities=tmp_path / "p.zarr",
                   block_shape=(8, 16, 16))
    np.testing.assert_allclose(open_zarr(tmp_path / "p.zarr")[:], whole.probabilities,
                               atol=1e-5)
    np.testing.assert_array_equal(open_zarr(tmp_path / "l.zarr")[:], whole.labels)


def test_one_stage_models_are_unchanged(small_volume, tmp_path):
    image, _, strokes = small_volume
    model = train(image, strokes, TrainConfig(**TINY, two_stage=False)).model
    assert not hasattr(model, "stage1") and "stage1" not in model.config
    assert "two_stage" not in model.config["training"]
    assert model.config["architecture"]["in_channels"] == 1
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "model.safetensors"]
    assert "stage1" not in json.loads((tmp_path / "m" / "config.json").read_text())
    assert not hasattr(load_model(tmp_path / "m"), "stage1")
    # Training it further with two stages is refused: its network takes the image alone.
    one_line_error(lambda: train(image, strokes, TrainConfig(**TWO), model=model),
                    "one stage", "two_stage off")


@pytest.mark.parametrize("given, words", [
    (dict(task="regression"), ("multiclass and multilabel tasks", "two_stage off")),
    (dict(loss="dice"), ("'dice'", "ce or boundary_ce")),
    (dict(two_stage="yes"), ("True, False or None",)),
])
def test_bad_combinations_are_refused_with_one_line(given, words):
    one_line_error(lambda: TrainConfig(**{**TWO, **given}).checked(), *words)


def test_an_inconsistent_stage1_in_config_json_is_refused(two_stage, tmp_path):
    save_model(two_stage[1].model, tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["stage1"]["num_classes"] = 3
    path.write_text(json.dumps(config))
    one_line_error(lambda: load_model(tmp_path / "m"), "stage1", "inconsistent")


def test_an_untrained_second_stage_predicts_what_the_first_does():
    """The U-Net learns a correction to the first stage's log-probabilities: its head starts
    at zero, so before any step its classes are exactly the first stage's."""
    import torch

    from napari_voxseg.core.models import architecture_from, build_model

    arch = architecture_from(in_channels=4, num_classes=3, base_channels=4, depth=2,
                             prior_channels=3)
    net = build_model(arch).eval()
    probs = torch.softmax(torch.randn(1, 3, 8, 16, 16) * 3, dim=1)
    x = torch.cat([torch.randn(1, 1, 8, 16, 16), probs], dim=1)
    with torch.no_grad():
        logits = net(x)
    assert torch.equal(logits.argmax(1), probs.argmax(1))
    torch.testing.assert_close(logits.softmax(1), probs.clamp(1e-4, 1) /
                               probs.clamp(1e-4, 1).sum(1, keepdim=True))
    with pytest.raises(VoxSegError, match="prior_channels"):
        architecture_from(in_channels=3, num_classes=3, prior_channels=3)


def test_a_large_volume_s_first_overlay_covers_the_slice_in_view_first(small_volume,
                                                                     monkeypatch):
    """Past QUICK_VOXELS the first overlay is the region in view's middle slice (seconds on
    256x512x512), fitted on the painted slices alone; then the whole stage 1 follows."""
    import napari_voxseg.core.two_stage as two_stage_module
    from napari_voxseg.core.stage1 import _stroke_boxes

    image, truth, strokes = small_volume
    monkeypatch.setattr(two_stage_module, "QUICK_VOXELS", 1000)
    monkeypatch.setattr(two_stage_module, "QUICK_REGION", 1000)
    asked = (slice(2, 14), slice(0, 32), slice(0, 32))
    fitting = two_stage_module.iter_fit_stage(image[None], strokes, 2, None, overlay=True,
                                              region=lambda: asked)
    first, where = next(fitting)
    assert where == (slice(8, 9), slice(0, 32), slice(0, 32))
    assert first.shape == (2, 1, 32, 32)
    assert (first.argmax(0)[0] + 1 == truth[8]).mean() > 0.9
    whole, where = next(fitting)
    assert where is None and whole.shape == (2, 16, 32, 32)
    assert _stroke_boxes(strokes) == [((5, 2, 2), (6, 30, 30)), ((9, 2, 2), (10, 30, 30))]


@pytest.mark.parametrize("polls, words", [(1, "read the strokes"), (2, "predicted the volume")])
def test_a_stop_while_stage_1_fits_is_heard_before_it_ends(small_volume, polls, words):
    """Stage 1 polls ``should_stop`` before each block it reads (fitting) and predicts: a
    Stop then ends the run at once (minutes earlier on a large CPU volume), with nothing made
    and the strokes as they were."""
    image, _, strokes = small_volume
    given = strokes.copy()
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) >= polls

    run = iter_train(image, given, TrainConfig(**TWO), should_stop=should_stop,
                     preview_region=lambda: None)
    with pytest.raises(StoppedEarly, match=f"stopped while stage 1 {words}"):
        events, _ = drain(run)
    assert len(asked) == polls
    np.testing.assert_array_equal(given, strokes)
