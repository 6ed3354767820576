"""Two stages for multi-label tasks: one absent/present stage 1 per class (classes overlap),
its probabilities the U-Net's input and its confident voxels per-class pseudo-labels; the
model keeps both and predicts what stage 1 does while the U-Net has not beaten it."""

import numpy as np
import pytest
import torch
from helpers import TINY, drain, one_line_error
from safetensors.torch import load_file, save_file

from napari_voxseg.core import PreviewEvent, ValidationEvent
from napari_voxseg.core.checkpoint import load_model, save_model
from napari_voxseg.core.infer import iter_predict, run_to_end
from napari_voxseg.core.losses import build_loss
from napari_voxseg.core.models import architecture_from, build_model
from napari_voxseg.core.stage1_multilabel import (
    MultiLabelStage1,
    fit_multilabel_stage1,
    load_stage1,
)
from napari_voxseg.core.train import TrainConfig, iter_train
from napari_voxseg.core.two_stage import pseudo_labels, training_labels
from napari_voxseg.core.validation import score_probabilities, split_strokes


@pytest.fixture(scope="module")
def overlapping():
    """Two overlapping classes: 'cell' (a bright box) and 'left half' (x < 16), which
    intensity alone cannot tell apart from the rest. Strokes in each class's own layer
    (1 = absent, 2 = present), on a few slices, inside the regions."""
    rng = np.random.default_rng(3)
    image = rng.normal(0, 0.1, (16, 32, 32)).astype(np.float32)
    cell = np.zeros((16, 32, 32), bool)
    cell[4:12, 8:24, 8:24] = True
    image[cell] += 1.0
    image[:, :, :16] += 0.5  # the left half is brighter too
    left = np.zeros_like(cell)
    left[:, :, :16] = True
    strokes = np.zeros((2, 16, 32, 32), np.uint8)
    for z in (2, 5, 8, 10, 13):
        for k, truth in enumerate((cell, left)):
            layer = strokes[k, z]
            for y in (4, 12, 20, 28):
                row = truth[z, y]
                for x in range(2, 30, 5):
                    if row[max(0, x - 2):x + 3].all() or not row[max(0, x - 2):x + 3].any():
                        layer[y, x:x + 2] = 2 if row[x] else 1
    return image, np.stack([cell, left]).astype(np.uint8) + 1, strokes


def test_one_stage_1_per_class_beats_chance_and_round_trips_without_pickle(overlapping,
                                                                         tmp_path):
    image, truth, strokes = overlapping
    model = fit_multilabel_stage1(image, strokes)
    probs = model.predict_proba(image)
    assert probs.shape == truth.shape and probs.dtype == np.float32
    for k in range(2):
        assert np.mean((probs[k] >= 0.5) + 1 == truth[k]) > 0.9
    overlap = (truth == 2).all(axis=0)
    assert np.mean((probs[:, overlap] >= 0.5).all(axis=0)) > 0.8  # both classes at once
    # Block by block (one filter bank for both classes) equals the whole volume.
    np.testing.assert_allclose(model.predict_proba(image, block=(8, 16, 16)), probs, atol=1e-5)
    path = tmp_path / "stage1.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = load_stage1(load_file(str(path)), model.metadata())
    assert isinstance(loaded, MultiLabelStage1) and loaded.num_classes == 2
    np.testing.assert_array_equal(loaded.predict_proba(image), probs)
    bad = {**model.metadata(), "classes": model.metadata()["classes"][:1]}
    one_line_error(lambda: load_stage1(model.state_dict(), bad), "save it again")


def test_multilabel_pseudo_labels_split_and_score_are_per_class():
    probs = np.array([[0.9, 0.45, 0.1], [0.1, 0.85, 0.95]], np.float32)
    np.testing.assert_array_equal(pseudo_labels(probs, multilabel=True), [[2, 0, 1], [1, 2, 2]])
    truth = np.array([[2, 1, 0], [0, 0, 0]])  # class 2 has nothing held out
    assert score_probabilities(probs, truth)[0] == pytest.approx(1.0)
    strokes = np.zeros((2, 4, 8, 40), np.uint8)
    for i in range(8):
        strokes[0, 1, 2, 4 * i: 4 * i + 2] = 1 + i % 2
    strokes[1, 2, 2, :6] = 2
    train, held = split_strokes(strokes)
    assert held.shape == strokes.shape and not held[1].any() and held[0].any()
    np.testing.assert_array_equal(np.where(held > 0, held, train), strokes)


def test_training_labels_weigh_each_class_s_pseudo_labels_below_its_strokes():
    class Stage:
        held_out = None
        pseudo = np.array([[[[2, 1, 0]]], [[[0, 0, 1]]]], np.uint8)

    strokes = np.array([[[[0, 0, 1]]], [[[2, 0, 0]]]], np.uint8)
    labels, weights, strata = training_labels(Stage, strokes, None, np.ones((1, 1, 3)))
    np.testing.assert_array_equal(labels, [[[[2, 1, 1]]], [[[2, 0, 1]]]])
    np.testing.assert_allclose(weights, [[[[0.3, 0.3, 1]]], [[[1, 0, 0.3]]]])
    assert strokes[0, 0, 0, 0] == 0  # the strokes are not changed


def test_bce_honours_each_class_s_voxel_weights():
    logits = torch.tensor([[[[[2.0, -1.0]]], [[[0.5, 3.0]]]]])  # (N=1, K=2, 1, 1, 2)
    labels = torch.tensor([[[[[2, 1]]], [[[1, 2]]]]])
    loss = build_loss("bce", task="multilabel")
    full = loss(logits, labels)
    weights = torch.tensor([[[[[1.0, 0.0]]], [[[0.0, 0.0]]]]])
    only_first = loss(logits, labels, weights)
    expected = torch.nn.functional.softplus(torch.tensor(-2.0))  # -log sigmoid(2)
    assert float(only_first) == pytest.approx(float(expected), rel=1e-5)
    assert float(full) != pytest.approx(float(only_first))


def test_a_zero_head_with_a_logit_prior_gives_back_the_prior():
    arch = architecture_from(in_channels=3, num_classes=2, base_channels=4, depth=2,
                             prior_channels=2, prior_link="logit")
    net = build_model(arch).eval()
    x = torch.rand(1, 3, 4, 8, 8) * 0.98 + 0.01
    with torch.no_grad():
        out = torch.sigmoid(net(x))
    torch.testing.assert_close(out, x[:, 1:], atol=1e-5, rtol=1e-4)
    one_line_error(lambda: architecture_from(prior_link="softplus"), "prior_link")


@pytest.fixture(scope="module")
def multilabel_run(overlapping):
    image, _, strokes = overlapping
    return drain(iter_train(image, strokes, TrainConfig(**dict(TINY, iterations=10),
                                                        task="multilabel"),
                            preview_region=lambda: (slice(4, 8),) + (slice(None),) * 2,
                            preview_every=0))


def test_multilabel_trains_two_stages_by_default(overlapping, multilabel_run, tmp_path):
    image, truth, strokes = overlapping
    events, result = multilabel_run
    first = events[0]
    assert isinstance(first, PreviewEvent) and first.stage == 1 and first.step == 0
    assert first.result.labels.shape == truth.shape  # per class, the whole volume
    assert np.mean(first.result.labels == truth) > 0.9
    checks = [e for e in events if isinstance(e, ValidationEvent)]
    assert checks and checks[-1].held_out > 0
    model = result.model
    assert isinstance(model.stage1, MultiLabelStage1)
    assert model.config["architecture"]["prior_link"] == "logit"
    out = run_to_end(iter_predict(model, image, probabilities=True))
    assert out.labels.shape == truth.shape
    if model.config["training"]["validation"]["kept"] == "stage 1":
        stage1 = model.stage1.predict_proba(image)
        # Equal but where a probability is within float16's rounding of 0.5 (on a GPU).
        clear = np.abs(stage1 - 0.5) > 2e-3
        np.testing.assert_array_equal(out.labels[clear], (1 + (stage1 >= 0.5))[clear])
    assert np.mean(out.labels == truth) > 0.9
    save_model(model, tmp_path / "ml")
    assert (tmp_path / "ml" / "stage1.safetensors").is_file()
    again = run_to_end(iter_predict(load_model(tmp_path / "ml"), image))
    np.testing.assert_array_equal(again.labels, out.labels)


def test_multilabel_one_stage_is_still_there(overlapping):
    image, _, strokes = overlapping
    events, result = drain(iter_train(image, strokes, TrainConfig(
        **TINY, task="multilabel", two_stage=False)))
    assert getattr(result.model, "stage1", None) is None
    assert not any(isinstance(e, ValidationEvent) for e in events)
