"""The engine: checks, losses, sampling, the network, training, prediction, checkpoints."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import TINY as BASE

from napari_voxseg.core import (
    TrainConfig,
    TrainEvent,
    ValidationEvent,
    VoxSegError,
    check_image,
    check_labels,
    class_weights,
    dice_per_class,
    iou_per_class,
    iter_train,
    load_model,
    predict,
    read_volume,
    save_model,
    train,
    write_volume,
)
from napari_voxseg.core.infer import gaussian_importance, iter_predict, tile_starts
from napari_voxseg.core.losses import build_loss
from napari_voxseg.core.models import build_model
from napari_voxseg.core.sampling import PatchSampler

TINY = {**BASE, "patch_size": (16, 32, 32)}  # one tile covers the small volume


# ---- input checks -----------------------------------------------------------------------
@pytest.mark.parametrize("array, fragment", [
    (np.zeros((8, 8)), "2D"),
    (np.zeros((2, 2, 2, 2, 2)), "5D"),
    (np.zeros((0, 4, 4)), "empty"),
    (np.array([[["a"]]]), "not numbers"),
    (np.full((4, 4, 4), np.nan, np.float32), "NaN"),
    (np.full((4, 4, 4), np.inf), "NaN or infinite"),
    (np.zeros((40, 4, 4, 4)), "channels"),
])
def test_bad_images_are_refused_with_a_reason(array, fragment):
    with pytest.raises(VoxSegError, match=fragment):
        check_image(array)


def test_image_becomes_float_channels_first():
    out = check_image(np.ones((3, 4, 5), np.uint16))
    assert out.shape == (1, 3, 4, 5) and out.dtype == np.float32


@pytest.mark.parametrize("labels, kwargs, fragment", [
    (np.zeros((4, 4, 5), np.uint8), {}, "shape"),
    (np.zeros((4, 4, 4), np.uint8), {}, "no strokes"),
    (np.ones((4, 4, 4), np.uint8), {}, "only one class"),
    (np.ones((4, 4, 4), np.float32), {}, "integers"),
    (np.ones((4, 4, 4), bool), {}, "boolean"),
    (np.full((4, 4, 4), -1, np.int32), {}, "negative"),
    (np.arange(64, dtype=np.uint8).reshape(4, 4, 4) % 4, {"num_classes": 2}, "class count"),
    (np.arange(64, dtype=np.int64).reshape(4, 4, 4) * 10**9, {}, "at most 255 classes"),
    (np.arange(64, dtype=np.uint8).reshape(4, 4, 4) % 4, {"num_classes": 300}, "2 to 255"),
])
def test_bad_labels_are_refused_with_a_reason(labels, kwargs, fragment):
    with pytest.raises(VoxSegError, match=fragment):
        check_labels(labels, (4, 4, 4), **kwargs)


def test_class_count_comes_from_strokes_or_is_given():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, 0], labels[1, 1, 1] = 1, 3
    assert check_labels(labels, (4, 4, 4))[1] == 3
    assert check_labels(labels, (4, 4, 4), num_classes=5)[1] == 5


def test_class_weights():
    labels = np.zeros((10,), np.uint8)
    labels[:6], labels[6:8] = 1, 2  # class 1: 6 voxels, class 2: 2, class 3: none
    auto = class_weights("auto", labels, 3)
    assert auto[2] == 0 and auto[1] == pytest.approx(3 * auto[0])
    assert auto[:2].mean() == pytest.approx(1.0)
    assert class_weights("none", labels, 3) is None
    assert class_weights("1, 2,3", labels, 3).tolist() == [1, 2, 3]
    for bad, fragment in (("1,2", "2 class weight"), ("1,-2,3", ">= 0"), ("a,b,c", "not numbers"),
                          ("0,0,0", "all 0"), ("1,nan,1", "finite")):
        with pytest.raises(VoxSegError, match=fragment):
            class_weights(bad, labels, 3)


# ---- sampling ----------------------------------------------------------------------------
def test_patches_are_biased_to_strokes_and_augmentation_keeps_alignment(sample):
    labels = sample.strokes
    # The image equals the labels, so any misalignment from a flip or a turn shows.
    image = labels[np.newaxis].astype(np.float32)
    sampler = PatchSampler(image, labels, (16, 32, 32), voxel_weights=labels * 2.0, seed=0)
    with_strokes = 0
    for _ in range(200):
        img, lab, weights = sampler.sample()
        assert img.shape == (1, 16, 32, 32) and lab.shape == (16, 32, 32)
        np.testing.assert_array_equal(weights, lab * 2.0)  # weights turn with the labels
        gain_offset = np.polyfit(lab.ravel(), img[0].ravel(), 1) if lab.any() else None
        if gain_offset is not None:
            np.testing.assert_allclose(img[0], np.polyval(gain_offset, lab), atol=1e-4)
        with_strokes += bool(lab.any())
    assert with_strokes >= 160  # ~90% of patches are centred on a stroke
    assert sampler.annotated == int(np.count_nonzero(labels))


def test_sampler_pads_volumes_smaller_than_a_patch():
    labels = np.zeros((3, 10, 10), np.uint8)
    labels[1, 2, 2], labels[1, 7, 7] = 1, 2
    img, lab, weights = PatchSampler(np.zeros((1, 3, 10, 10), np.float32), labels,
                                     (8, 16, 16)).sample()
    assert img.shape == (1, 8, 16, 16) and lab.shape == (8, 16, 16) and weights is None
    # Regression targets are padded with NaN (= not known), never with a value.
    target = np.full((1, 3, 10, 10), 0.5, np.float32)
    _, values, _ = PatchSampler(np.zeros((1, 3, 10, 10), np.float32), target, (8, 16, 16),
                                strata=labels, fill=np.nan).sample()
    assert values.shape == (1, 8, 16, 16) and values.dtype == np.float32
    assert np.isnan(values).sum() == 8 * 16 * 16 - 3 * 10 * 10


# ---- network and prediction -------------------------------------------------------------
def test_unet_shapes():
    model = build_model({"in_channels": 2, "num_classes": 4, "base_channels": 4, "depth": 3})
    assert model(torch.zeros(1, 2, 8, 16, 12)).shape == (1, 4, 8, 16, 12)


class Constant(torch.nn.Module):
    """A network whose output is the same everywhere: any seam would show in the blend."""

    def __init__(self, probs):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.log(torch.tensor(probs)))
        self.config = {"architecture": {"in_channels": 1, "num_classes": len(probs), "depth": 2},
                       "normalization": {"low": 1.0, "high": 99.0}, "patch_size": [8, 16, 16]}

    def forward(self, x):
        return self.logits.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, *x.shape[2:])


def test_constant_network_gives_the_constant_everywhere():
    probs = [0.2, 0.7, 0.1]
    image = np.random.default_rng(0).random((21, 45, 37)).astype(np.float32)
    gen = iter_predict(Constant(probs), image, overlap=0.5, probabilities=True)
    result = None
    while result is None:
        try:
            next(gen)
        except StopIteration as stop:
            result = stop.value
    assert result.probabilities.shape == (3, 21, 45, 37)
    np.testing.assert_allclose(result.probabilities, np.broadcast_to(
        np.array(probs, np.float32)[:, None, None, None], (3, 21, 45, 37)), rtol=1e-5)
    assert (result.labels == 2).all()


def test_blending_matches_one_forward_when_the_volume_fits_a_tile():
    torch.manual_seed(0)
    model = build_model({"num_classes": 3, "base_channels": 4, "depth": 2}).eval()
    model.config = {"architecture": {"in_channels": 1, "num_classes": 3, "depth": 2},
                    "normalization": {"low": 0.0, "high": 100.0}, "patch_size": [8, 16, 16]}
    image = np.random.default_rng(0).random((8, 16, 16)).astype(np.float32)
    from napari_voxseg.core import normalize

    with torch.no_grad():
        direct = model(torch.from_numpy(normalize(image[None], 0, 100))[None]).argmax(1)[0] + 1
    np.testing.assert_array_equal(predict(model, image, precision="float32"), direct.numpy())


def test_gaussian_window_and_tiles():
    w = gaussian_importance((8, 16, 16))
    assert w.max() == 1.0 and w.min() > 0 and w[4, 8, 8] > w[0, 0, 0]
    assert tile_starts(10, 16, 0.5) == [0]
    starts = tile_starts(100, 32, 0.5)
    assert starts[0] == 0 and starts[-1] == 68 and max(np.diff(starts)) <= 16


# ---- training ------------------------------------------------------------------------------
def test_training_yields_events_learns_and_stops(small_volume):
    image, truth, strokes = small_volume
    events = []
    gen = iter_train(image, strokes, TrainConfig(**{**TINY, "iterations": 40}))
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    judged = [e for e in events if isinstance(e, ValidationEvent)]  # two stages, by default
    assert judged and judged[-1].step == 40
    events = [e for e in events if isinstance(e, TrainEvent)]
    assert [e.step for e in events] == list(range(1, 41))
    assert all(e.total == 40 and math.isfinite(e.loss) for e in events)
    assert np.mean([e.loss for e in events[-5:]]) < np.mean([e.loss for e in events[:5]])
    assert result.steps == 40 and not result.stopped and not result.model.training
    config = result.model.config
    assert config["architecture"]["num_classes"] == 2 and len(config["training"]["history"]) > 0
    json.dumps(config)  # the config is JSON-able as saved

    steps: list = []  # the steps done, as they come (stage 1 polls should_stop too)
    run = iter_train(image, strokes, TrainConfig(**{**TINY, "iterations": 1000}),
                     should_stop=lambda: len(steps) >= 4)
    while True:
        try:
            event = next(run)
        except StopIteration as done:
            stopped = done.value
            break
        if isinstance(event, TrainEvent):
            steps.append(event)
    assert stopped.stopped and stopped.steps == 4


def test_strokes_are_never_modified(small_volume):
    image, _, strokes = small_volume
    before = strokes.copy()
    train(image, strokes, TrainConfig(**TINY))
    np.testing.assert_array_equal(strokes, before)


# ---- checkpoints --------------------------------------------------------------------------
def test_save_load_round_trip_gives_the_same_prediction(tmp_path, small_volume):
    image, _, strokes = small_volume
    result = train(image, strokes, TrainConfig(**TINY), voxel_size=(2.0, 1.0, 1.0))
    first = predict(result.model, image)
    save_model(result.model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "model.safetensors", "stage1.safetensors"]  # two stages, by default
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(predict(loaded, image), first)
    assert loaded.config["voxel_size"] == [2.0, 1.0, 1.0]
    assert set(loaded.config["versions"]) >= {"napari_voxseg", "torch"}
    save_model(loaded, tmp_path / "m", overwrite=True)  # replacing keeps exactly one model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_damaged_models_are_refused(tmp_path, small_volume):
    image, _, strokes = small_volume
    model = train(image, strokes, TrainConfig(**TINY)).model
    save_model(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())

    with pytest.raises(VoxSegError, match="does not exist"):
        load_model(tmp_path / "nothing")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(VoxSegError, match="not readable JSON"):
        load_model(tmp_path / "m")
    del config["architecture"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(VoxSegError, match="architecture"):
        load_model(tmp_path / "m")

    save_model(model, tmp_path / "m", overwrite=True)
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x80\x04garbage")
    with pytest.raises(VoxSegError, match="safetensors"):
        load_model(tmp_path / "m")


# ---- metrics and files -------------------------------------------------------------------
def test_dice_and_iou():
    truth = np.array([1, 1, 2, 2, 2, 2])
    pred = np.array([1, 2, 2, 2, 2, 1])
    dice = dice_per_class(pred, truth)
    assert dice[1] == pytest.approx(2 * 1 / (2 + 2)) and dice[2] == pytest.approx(6 / 8)
    assert iou_per_class(pred, truth)[2] == pytest.approx(3 / 5)
    with pytest.raises(VoxSegError, match="shape"):
        dice_per_class(pred[:3], truth)


def test_truncated_and_unknown_files(tmp_path):
    path = write_volume(tmp_path / "v.tif", np.zeros((4, 8, 8), np.float32))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(VoxSegError, match="not a readable"):
        read_volume(path)
    with pytest.raises(VoxSegError, match="cannot read"):
        read_volume(tmp_path / "v.png")


@pytest.mark.parametrize("shape", [(1, 4, 5), (2, 3, 4, 5), (3, 1, 4, 5)])
def test_tiff_keeps_single_slices_and_channels_first(tmp_path, shape):
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    back, voxel = read_volume(write_volume(tmp_path / "v.tif", array, (3.0, 0.5, 0.25)))
    np.testing.assert_array_equal(back, array)
    assert voxel == pytest.approx((3.0, 0.5, 0.25))


def test_nan_losses_are_skipped_and_repeated_ones_stop_training(small_volume, monkeypatch):
    import sys

    train_module = sys.modules["napari_voxseg.core.train"]  # the module, not core.train()
    run_module = sys.modules["napari_voxseg.core.run"]  # where the loss is built

    image, _, strokes = small_volume
    real = build_loss("ce")

    class Flaky(torch.nn.Module):
        """Cross-entropy that is NaN every ``every`` calls (every call when every == 1)."""

        uses_voxel_weights = False

        def __init__(self, every):
            super().__init__()
            self.every, self.calls = every, 0

        def forward(self, logits, labels, voxel_weights=None):
            self.calls += 1
            value = real(logits, labels)
            return value * float("nan") if self.calls % self.every == 0 else value

    def flaky(name, class_weights=None, **kwargs):
        return Flaky(3)

    monkeypatch.setattr(run_module, "build_loss", flaky)
    monkeypatch.setattr(train_module, "MAX_BAD_STEPS", 3)
    result = train(image, strokes, TrainConfig(**{**TINY, "iterations": 9}))
    assert result.skipped_steps == 3
    assert all(torch.isfinite(p).all() for p in result.model.parameters())

    # NaN from the very first step: nothing was learned, so training fails with the reason.
    monkeypatch.setattr(run_module, "build_loss", lambda name, class_weights=None, **kw: Flaky(1))
    with pytest.raises(VoxSegError, match="NaN or infinite 3 steps in a row"):
        train(image, strokes, TrainConfig(**{**TINY, "iterations": 9}))

    # NaN for good after 6 good steps: training stops, says why, and keeps a finite model.
    class GoesBad(Flaky):
        def forward(self, logits, labels, voxel_weights=None):
            self.calls += 1
            value = real(logits, labels)
            return value if self.calls <= 6 else value * float("nan")

    monkeypatch.setattr(run_module, "build_loss", lambda name, class_weights=None, **kw:
                        GoesBad(1))
    result = train(image, strokes, TrainConfig(**{**TINY, "iterations": 50}))
    assert result.stopped and "NaN or infinite 3 steps in a row" in result.warning
    assert len(result.history) == 6 and result.steps < 50
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert predict(result.model, image).shape == image.shape
