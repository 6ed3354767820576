"""Two stages by default: the first overlay comes from stage 1 before any step, strokes are
held out to judge the U-Net against stage 1, the model keeps stage 1 where the U-Net is not
better, and new strokes refit stage 1 at once."""

import numpy as np
import pytest
from helpers import TINY, drain, one_line_error

from napari_voxseg.core import PreviewEvent, TrainEvent, ValidationEvent
from napari_voxseg.core.infer import iter_predict, run_to_end
from napari_voxseg.core.train import TrainConfig, iter_train
from napari_voxseg.core.validation import boxes, score, split_strokes, still_held


def pieces(count: int, value: int, shape=(4, 8, 40)) -> np.ndarray:
    strokes = np.zeros(shape, np.uint8)
    for i in range(count):
        strokes[1, 2, 4 * i: 4 * i + 2] = value
    return strokes


def test_a_quarter_of_the_separate_strokes_of_a_class_is_held_out():
    strokes = pieces(8, 2) + np.where(pieces(2, 1, (4, 8, 40))[::-1] > 0, 1, 0).astype(np.uint8)
    train, held = split_strokes(strokes, seed=0)
    assert set(np.unique(held)) == {0, 2}  # class 1 has two strokes: both train
    assert np.count_nonzero(held) == 2 * 2  # 2 of 8 strokes of 2 voxels
    np.testing.assert_array_equal(np.where(held > 0, held, train), strokes)
    assert not np.any((train > 0) & (held > 0))
    np.testing.assert_array_equal(split_strokes(strokes, seed=0)[1], held)  # seeded
    assert split_strokes(pieces(2, 1), seed=0)[1] is None  # nothing to hold out
    # Painting since: erased held-out strokes are gone, the others stay held out.
    erased = strokes.copy()
    erased[held > 0] = 0
    assert still_held(held, erased) is None
    np.testing.assert_array_equal(still_held(held, strokes), held)
    assert len(boxes(held)) == 2


def test_score_is_dice_on_the_held_out_voxels_then_confidence():
    truth = np.array([0, 1, 1, 2, 2])
    labels = np.array([2, 1, 2, 2, 2])  # the unheld voxel does not count
    probs = np.array([[0.5, 0.9, 0.4, 0.2, 0.1], [0.5, 0.1, 0.6, 0.8, 0.9]])
    dice, confidence = score(labels, truth, probs)
    assert dice == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert confidence == pytest.approx((0.9 + 0.4 + 0.8 + 0.9) / 4)


@pytest.mark.parametrize("given, two", [
    ({}, True), (dict(loss="focal"), False), (dict(class_weights="auto"), True),
    (dict(loss="dice"), False),
    (dict(task="multilabel"), True), (dict(task="multilabel", loss="dice"), False),
    (dict(task="regression"), False),
    (dict(two_stage=False), False)])
def test_two_stages_are_the_default_where_they_apply(given, two):
    assert TrainConfig(**given).checked().two_stage is two


@pytest.fixture(scope="module")
def run_with_previews(small_volume):
    image, _, strokes = small_volume
    events, result = drain(iter_train(image, strokes, TrainConfig(**dict(TINY, iterations=10)),
                                      preview_region=lambda: (slice(4, 8),) + (slice(None),) * 2,
                                      preview_every=0))
    return events, result


def test_the_first_overlay_is_stage_1_before_any_step(small_volume, run_with_previews):
    image, truth, _ = small_volume
    events, _ = run_with_previews
    first = events[0]
    assert isinstance(first, PreviewEvent) and first.stage == 1 and first.step == 0
    assert first.result.labels.shape == truth.shape  # the whole volume
    assert np.mean(first.result.labels == truth) > 0.9
    assert any(isinstance(e, TrainEvent) for e in events)


def test_the_unet_is_judged_on_held_out_strokes_and_kept_only_when_better(small_volume,
                                                                          run_with_previews):
    image, _, strokes = small_volume
    events, result = run_with_previews
    checks = [e for e in events if isinstance(e, ValidationEvent)]
    assert checks and checks[-1].step == 10 and checks[-1].held_out > 0
    record = result.model.config["training"]["validation"]
    assert record["kept"] in ("network", "stage 1")
    assert record["held_out_voxels"] == checks[-1].held_out
    # Stage 1 scores 1.0 on these easy strokes, so it is kept; the model then predicts what
    # stage 1 (fitted on all the strokes, held-out ones too) does.
    assert record["kept"] == "stage 1" and checks[-1].chosen == "stage 1"
    previews = [e for e in events if isinstance(e, PreviewEvent)]
    assert previews and all(e.stage == 1 for e in previews)  # the U-Net never took over
    out = run_to_end(iter_predict(result.model, image, probabilities=True))
    stage1 = result.model.stage1.predict_proba(image[None])
    np.testing.assert_array_equal(out.labels, stage1.argmax(0) + 1)
    assert result.model.stage1.has_mlp


def test_new_strokes_refit_stage_1_at_once_and_erased_ones_keep_training(small_volume):
    image, _, strokes = small_volume
    more = strokes.copy()
    more[12, 10:22, 12] = 2
    sent = iter([None, more, np.zeros_like(strokes)])
    events, result = drain(iter_train(
        image, strokes, TrainConfig(**dict(TINY, iterations=30)),
        get_labels=lambda: next(sent, None), preview_region=lambda: None))
    overlays = [e for e in events if isinstance(e, PreviewEvent) and e.stage == 1]
    assert len(overlays) >= 2  # the first fit, then the refit on the new strokes
    assert overlays[-1].step == 0 and overlays[-1].annotated == np.count_nonzero(more)
    assert result.steps == 30
    assert any("not used" in note for note in result.adjustments)
    assert result.model.config["training"]["stroke_counts"] == [
        int((more == c).sum()) for c in (1, 2)]


def test_one_painted_class_is_refused_with_one_line(small_volume):
    image, _, strokes = small_volume
    one = np.where(strokes == 2, 2, 0).astype(np.uint8)
    one_line_error(lambda: drain(iter_train(image, one, TrainConfig(**TINY))), "class")


class Parts:
    """A stage 1 whose forest and MLP give fixed probabilities, mixed by forest_weight."""

    def __init__(self, forest, mlp):
        self.forest, self.mlp, self.forest_weight = forest, mlp, 0.5

    def predict_proba(self, image, region=None, device="cpu"):
        w = self.forest_weight
        return (w * self.forest + (1 - w) * self.mlp)[(slice(None), *region)]


@pytest.mark.parametrize("forest_right, mlp_right, chosen", [
    (True, False, 0.7), (False, True, 0.3), (True, True, 0.7)])
def test_the_forests_share_is_chosen_on_held_out_strokes(forest_right, mlp_right, chosen):
    from napari_voxseg.core.two_stage import choose_forest_weight

    held = pieces(4, 2) + pieces(4, 1, (4, 8, 40))[::-1]  # classes 1 and 2, 4 strokes each
    truth = np.where(held > 0, held, 1)
    right = np.stack([truth == 1, truth == 2]).astype(np.float32)
    wrong = right[::-1].copy()
    model = Parts(right if forest_right else wrong, right if mlp_right else wrong)
    assert choose_forest_weight(model, None, held) == chosen


def test_a_stage1_saved_before_the_forests_share_was_stored_mixes_half_and_half(two_stage_model):
    from napari_voxseg.core.stage1 import Stage1

    stage1 = two_stage_model.stage1
    meta = stage1.metadata()
    assert meta["forest_weight"] == stage1.forest_weight
    del meta["forest_weight"]
    assert Stage1.from_state(stage1.state_dict(), meta).forest_weight == 0.5


@pytest.fixture(scope="module")
def two_stage_model(run_with_previews):
    return run_with_previews[1].model


def test_strokes_on_one_slice_train_two_stages(small_volume):
    image, truth, strokes = small_volume
    one_slice = np.zeros_like(strokes)
    one_slice[5] = strokes[5]  # a frame of background and three lines inside the box
    _, result = drain(iter_train(image, one_slice, TrainConfig(**TINY)))
    assert result.model.stage1 is not None and result.steps == TINY["iterations"]
    labels = run_to_end(iter_predict(result.model, image)).labels
    assert np.mean(labels == truth) > 0.8  # one slice of strokes already segments the box


def test_with_nothing_held_out_stage_1_is_kept(small_volume):
    image, _, strokes = small_volume
    few = np.zeros_like(strokes)
    few[5] = np.where(strokes[5] == 1, 1, 0)  # one background frame
    few[5, 10:22, 14] = 2  # and one line inside the box: nothing can be held out
    events, result = drain(iter_train(image, few, TrainConfig(**TINY)))
    assert not any(isinstance(e, ValidationEvent) for e in events)
    assert result.model.config["training"]["validation"] == {
        "held_out_voxels": 0, "stage1": None, "network": None, "kept": "stage 1"}
    out = run_to_end(iter_predict(result.model, image)).labels
    np.testing.assert_array_equal(out, result.model.stage1.predict_proba(image[None]).argmax(0)
                                  + 1)
