"""The dock widget in a real napari viewer (under Xvfb): train, stop, save, load, bad input."""

import time

import numpy as np
import pytest
from helpers import wait_done

from napari_voxseg._qt.widget import VoxSegWidget
from napari_voxseg.core import load_model, predict, save_model

SAMPLE = "voxseg sample"


@pytest.fixture
def setup(sample_widget):
    return sample_widget


def test_train_adds_a_prediction_layer(setup, qtbot):
    viewer, widget = setup
    strokes = viewer.layers[f"{SAMPLE} strokes"]
    before = strokes.data.copy()
    widget.iterations.value = 15
    widget.train_button.clicked.emit()
    assert widget.running
    wait_done(qtbot, widget)
    layer = viewer.layers[f"{SAMPLE} prediction"]
    image = viewer.layers[SAMPLE]
    assert layer.data.shape == image.data.shape
    assert tuple(layer.scale) == tuple(image.scale) == (0.5, 0.5, 0.5)
    assert set(np.unique(layer.data)) <= {1, 2, 3} and len(np.unique(layer.data)) >= 2
    assert widget.model is not None and widget.model.config["voxel_size"] == [0.5, 0.5, 0.5]
    np.testing.assert_array_equal(strokes.data, before)  # the user's strokes are untouched
    assert widget.progress.value == 100

    # Training again updates the same layer in place instead of stacking new ones.
    widget.iterations.value = 3
    widget.train()
    wait_done(qtbot, widget)
    assert [lay.name for lay in viewer.layers].count(f"{SAMPLE} prediction") == 1


def test_stop_ends_training_within_seconds(setup, qtbot):
    viewer, widget = setup
    widget.iterations.value = 100_000
    widget.train()
    qtbot.waitUntil(lambda: widget.status.value.startswith("step"), timeout=60_000)
    start = time.monotonic()
    widget.stop_button.clicked.emit()
    wait_done(qtbot, widget, timeout=30_000)
    assert time.monotonic() - start < 10
    assert widget.status.value.startswith("stopped")
    assert widget.model.config["training"]["steps_done"] < 100_000
    assert f"{SAMPLE} prediction" in viewer.layers


def test_save_load_predict_round_trip(setup, qtbot, tmp_path):
    viewer, widget = setup
    widget.iterations.value = 10
    widget.train()
    wait_done(qtbot, widget)
    first = viewer.layers[f"{SAMPLE} prediction"].data.copy()
    assert widget.save_model(tmp_path / "model") == tmp_path / "model"

    # A fresh widget loads the model and predicts a second volume, as a user would next day.
    other = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(other, name="VoxSeg 2")
    assert other.load_model(tmp_path / "model") is not None
    assert other.classes.value == 3
    flipped = viewer.add_image(viewer.layers[SAMPLE].data[:, ::-1].copy(), name="second",
                               scale=(0.5, 0.5, 0.5))
    other.image_choice.value = flipped
    other.predict_button.clicked.emit()
    wait_done(qtbot, other)
    expected = predict(load_model(tmp_path / "model"), flipped.data)
    np.testing.assert_array_equal(viewer.layers["second prediction"].data, expected)

    other.image_choice.value = viewer.layers[SAMPLE]
    other.predict()
    wait_done(qtbot, other)
    np.testing.assert_array_equal(viewer.layers[f"{SAMPLE} prediction"].data, first)


def test_new_annotations_match_the_image(setup):
    viewer, widget = setup
    layer = widget.new_annotations()
    image = viewer.layers[SAMPLE]
    assert layer.data.shape == image.data.shape and tuple(layer.scale) == tuple(image.scale)
    assert layer.name == f"{SAMPLE} annotations" and widget.labels_choice.value is layer
    assert layer.mode == "paint" and not layer.data.any()


def test_saving_without_a_model_notifies(setup, messages, tmp_path):
    _, widget = setup
    assert widget.save_model(tmp_path / "m") is None
    assert "no model" in messages[-1] and not (tmp_path / "m").exists()


def test_prediction_layer_keeps_scale_and_translate(make_napari_viewer, qtbot, sample, tmp_path):
    """A model saved from the core predicts into a layer placed like its image."""
    from napari_voxseg.core import TrainConfig, train

    model = train(sample.image, sample.strokes,
                  TrainConfig(iterations=3, patch_size=(16, 32, 32))).model
    save_model(model, tmp_path / "m")
    viewer = make_napari_viewer()
    layer = viewer.add_image(sample.image, name="scan", scale=(2.0, 0.3, 0.3),
                             translate=(5.0, 1.0, 0.0))
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.load_model(tmp_path / "m")
    widget.image_choice.value = layer
    widget.predict()
    wait_done(qtbot, widget)
    pred = viewer.layers["scan prediction"]
    assert tuple(pred.scale) == (2.0, 0.3, 0.3) and tuple(pred.translate) == (5.0, 1.0, 0.0)


def test_strokes_painted_during_training_survive_stop_errors_and_reload(setup, qtbot, messages,
                                                                        tmp_path):
    viewer, widget = setup
    strokes = viewer.layers[f"{SAMPLE} strokes"]
    widget.iterations.value = 100_000
    widget.train()
    qtbot.waitUntil(lambda: widget.status.value.startswith("step"), timeout=60_000)
    # The person keeps painting while the network trains.
    strokes.data[30, 10:20, 10:12] = 1
    strokes.data[40, 50:52, 50:60] = 2
    strokes.refresh()
    painted = strokes.data.copy()
    widget.stop()
    wait_done(qtbot, widget, timeout=30_000)
    np.testing.assert_array_equal(strokes.data, painted)

    # An error (bad weights) and a save/reload cycle leave every painted voxel in place too.
    widget.weights.value = "1,2"
    widget.train()
    assert "class weight" in messages[-1]
    widget.weights.value = "none"
    widget.save_model(tmp_path / "m")
    widget.load_model(tmp_path / "m")
    widget.predict()
    wait_done(qtbot, widget)
    np.testing.assert_array_equal(strokes.data, painted)
    assert viewer.layers[f"{SAMPLE} prediction"] is not strokes


# ---- tasks: multi-label and regression ------------------------------------------------------
def test_the_form_offers_what_fits_the_task(setup):
    viewer, widget = setup
    assert [c for c in widget.loss.choices] == ["ce", "dice", "dice_ce", "focal", "boundary_ce"]
    assert widget.multi_labels.native.isHidden() and not widget.labels_choice.native.isHidden()
    assert not widget.two_stage.native.isHidden()  # two stages: ce and boundary_ce
    widget.loss.value = "focal"
    assert not widget.focal_gamma.native.isHidden() and widget.boundary_choice.native.isHidden()
    assert widget.two_stage.native.isHidden()  # focal weighs no voxel: one stage
    widget.loss.value = "boundary_ce"
    assert widget.focal_gamma.native.isHidden() and not widget.boundary_choice.native.isHidden()
    assert not widget.two_stage.native.isHidden()
    widget.task.value = "multilabel"
    assert list(widget.loss.choices) == ["bce", "dice_bce", "dice", "focal"]
    assert widget.labels_choice.native.isHidden() and not widget.multi_labels.native.isHidden()
    assert not widget.two_stage.native.isHidden()  # bce weighs voxels: two stages
    widget.loss.value = "dice"
    assert widget.two_stage.native.isHidden()
    widget.task.value = "regression"
    assert list(widget.loss.choices) == ["mse", "l1"]
    assert widget.weights.native.isHidden() and not widget.target_choice.native.isHidden()
    assert widget.new_labels_button.text == "New mask"


def test_class_weights_are_shown_and_follow_the_strokes(setup, qtbot):
    viewer, widget = setup
    strokes = viewer.layers[f"{SAMPLE} strokes"]
    counts = np.bincount(strokes.data.ravel(), minlength=4)[1:]
    widget.weights.value = "auto"
    shown = widget.weights_info.value
    expected = (1 / counts) / (1 / counts).mean()
    assert shown.startswith(", ".join(f"{w:.3g}" for w in expected)), shown
    assert "strokes " + ", ".join(str(c) for c in counts) in shown
    widget.weights.value = "median"
    assert widget.weights_info.value != shown
    # Painting follows at once, from the stroke alone; an undo (napari sends no paint or
    # data event for it) a moment later, from a recount.
    before = widget.weights_info.value
    strokes.selected_label = 3
    strokes.brush_size = 10
    strokes.paint((30, 60, 20), 3)
    after = np.bincount(strokes.data.ravel(), minlength=4)[1:]
    assert "strokes " + ", ".join(str(c) for c in after) in widget.weights_info.value
    strokes.undo()
    qtbot.waitUntil(lambda: widget.weights_info.value == before, timeout=5000)


def test_stroke_counts_follow_random_strokes_on_a_large_layer(setup, qtbot):
    """Past a few million voxels the counts are made in a background thread; strokes and
    fills keep them right from their changes alone, undos from a recount (equal to a full
    recount after many)."""
    viewer, widget = setup
    rng = np.random.default_rng(0)
    big = np.zeros((40, 256, 512), np.uint8)  # 5.2 M voxels
    big[5, 10:20, 10:200] = 1
    big[9, 100:110, 10:200] = 2
    layer = viewer.add_labels(big, name="big strokes")
    widget.labels_choice.value = layer
    qtbot.waitUntil(lambda: widget.weights_info.value.startswith("none (strokes"),
                    timeout=10_000)
    for k in range(30):
        layer.brush_size = int(rng.integers(1, 15))
        coord = tuple(int(rng.integers(0, n)) for n in big.shape)
        value = int(rng.integers(0, 4))
        if k % 10 == 9:  # a fill of a painted region (its stroke's changes, all of them)
            layer.fill((5, 15, 100), value)
        elif k % 10 == 4:  # an undo: napari says nothing but set_data; counted again
            layer.undo()
            qtbot.wait(5)
        else:
            layer.paint(coord, value)
    qtbot.waitUntil(lambda: widget.form.tallies.fresh, timeout=10_000)
    truth = np.bincount(layer.data.ravel(), minlength=4)[1:]
    tally = widget.form.tallies.tally(layer)
    assert [tally.count(v) for v in (1, 2, 3)] == truth.tolist()
    k = int(np.flatnonzero(truth).max()) + 1
    assert "strokes " + ", ".join(str(c) for c in truth[:k]) in widget.weights_info.value


def _train_and_wait(widget, qtbot, iterations):
    widget.iterations.value = iterations
    widget.train()
    assert widget.running, widget.status.value
    wait_done(qtbot, widget)


def _open_for_task(make_napari_viewer, sample_key, task):
    """A viewer with one of the samples, the widget docked, the image and the task chosen."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-voxseg", sample_key)
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_choice.value = viewer.layers[SAMPLE]
    widget.task.value = task
    return viewer, widget


def test_multilabel_gives_one_prediction_layer_per_class(make_napari_viewer, qtbot):
    viewer, widget = _open_for_task(make_napari_viewer, "cells_multilabel", "multilabel")
    layers = [viewer.layers[f"{SAMPLE} object"], viewer.layers[f"{SAMPLE} tube"]]
    widget.multi_labels.value = layers
    before = [layer.data.copy() for layer in layers]
    widget.weights.value = "auto"
    assert widget.weights_info.value[0].isdigit()
    _train_and_wait(widget, qtbot, 60)
    preds = [viewer.layers[f"{SAMPLE} prediction: {name}"] for name in ("object", "tube")]
    for pred in preds:
        assert pred.data.shape == viewer.layers[SAMPLE].data.shape
        assert tuple(pred.scale) == (0.5, 0.5, 0.5) and set(np.unique(pred.data)) == {1, 2}
    # The classes overlap: voxels predicted as both 'object' and 'tube' exist.
    assert np.logical_and(preds[0].data == 2, preds[1].data == 2).sum() > 100
    assert widget.model.config["task"] == "multilabel"
    assert [c["name"] for c in widget.model.config["classes"]] == ["object", "tube"]
    for layer, data in zip(layers, before):
        np.testing.assert_array_equal(layer.data, data)


def test_regression_gives_a_float_image_layer(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = _open_for_task(make_napari_viewer, "cells_regression", "regression")
    widget.target_choice.value = viewer.layers[f"{SAMPLE} distance"]
    widget.mask_choice.value = viewer.layers[f"{SAMPLE} known"]
    _train_and_wait(widget, qtbot, 120)
    pred = viewer.layers[f"{SAMPLE} prediction"]
    target = viewer.layers[f"{SAMPLE} distance"].data
    assert pred.data.dtype == np.float32 and pred.data.shape == target.shape
    assert tuple(pred.scale) == (0.5, 0.5, 0.5)
    error = np.abs(pred.data - target).mean()
    baseline = np.abs(target - target[viewer.layers[f"{SAMPLE} known"].data > 0].mean()).mean()
    assert error < 0.6 * baseline, (error, baseline)
    # Saved and loaded, the model sets the form back to regression.
    widget.save_model(tmp_path / "reg")
    widget.task.value = "multiclass"
    widget.load_model(tmp_path / "reg")
    assert widget.task.value == "regression"


def test_a_training_worker_s_copy_follows_strokes_fills_and_undos(make_napari_viewer, qtbot):
    """What LiveStrokes gives the worker equals the layer once painting stops, whatever was
    done to it (brush, fill, points, undo, the whole data replaced), and never writes it."""
    from napari_voxseg._qt.painting import LiveStrokes

    viewer = make_napari_viewer()
    rng = np.random.default_rng(3)
    layer = viewer.add_labels(rng.integers(0, 3, (16, 40, 40)).astype(np.uint8))
    live = LiveStrokes([layer])
    resyncs = []
    mirror_resync = live.mirrors[0].resync
    live.mirrors[0].resync = lambda: (resyncs.append(1), mirror_resync())
    live.connect(viewer)
    first = live.take()
    assert np.array_equal(first, layer.data)
    for k in range(40):
        coord = tuple(int(rng.integers(0, n)) for n in layer.data.shape)
        value = int(rng.integers(0, 4))
        action = k % 5
        if action in (0, 1):
            layer.brush_size = int(rng.integers(1, 9))
            layer.paint(coord, value)
        elif action == 2:
            layer.fill(coord, value)
        elif action == 3:
            layer.data_setitem(tuple(rng.integers(0, n, 20) for n in layer.data.shape), value)
        else:
            layer.undo()
        if k % 7 == 0:  # the worker takes now and then, while painting goes on
            qtbot.wait(1)
            live.take()
    qtbot.wait(10)  # the turn of the event loop that tells an undo apart from slicing
    seen = live.take()
    latest = seen if seen is not None else live.mirrors[0].current()
    assert np.array_equal(latest, layer.data)
    assert resyncs  # the undos
    resyncs.clear()
    viewer.dims.set_current_step(0, 5)  # browsing is not a change
    qtbot.wait(10)
    assert not resyncs and live.take() is None
    layer.data = np.zeros_like(layer.data)  # replaced whole
    assert not live.take().any()
    live.close()


def test_the_live_overlay_follows_the_brush_before_train(setup, qtbot):
    """Live overlay: each stroke refits stage 1's quick forest in the background and shows
    its prediction; the strokes are only read, and the brush stays on the strokes layer."""
    viewer, widget = setup
    strokes = viewer.layers[f"{SAMPLE} strokes"]
    truth = viewer.layers[f"{SAMPLE} ground truth"].data
    viewer.layers.selection.active = strokes
    widget.live.value = True
    qtbot.waitUntil(lambda: widget.live_overlay.shown >= 1, timeout=30_000)
    prediction = viewer.layers[f"{SAMPLE} prediction"]
    assert viewer.layers.selection.active is strokes
    assert (prediction.data == truth).mean() > 0.8
    before = strokes.data.copy()
    strokes.brush_size = 6
    strokes.paint((30, 60, 20), 3)
    painted = strokes.data.copy()
    shown = widget.live_overlay.shown
    qtbot.waitUntil(lambda: widget.live_overlay.shown > shown, timeout=30_000)
    np.testing.assert_array_equal(strokes.data, painted)
    assert (painted != before).any()
    widget.live.value = False  # off: painting shows nothing more
    shown = widget.live_overlay.shown
    strokes.paint((30, 20, 20), 1)
    qtbot.wait(1500)
    assert widget.live_overlay.shown == shown and not widget.running


def test_a_count_made_while_a_stroke_is_painted_is_not_taken(setup, qtbot):
    """napari writes a stroke into the data as the mouse moves and tells it (``paint``) at the
    release: a background count made meanwhile would hold part of it, and the stroke again
    when told. Such a count is put off until the stroke has ended."""
    from types import SimpleNamespace

    viewer, widget = setup
    big = np.zeros((40, 256, 512), np.uint8)  # past the size counted on the spot
    big[5, 10:20, 10:200] = 1
    big[9, 100:110, 10:200] = 2
    layer = viewer.add_labels(big, name="big strokes")
    widget.labels_choice.value = layer
    tallies = widget.form.tallies
    qtbot.waitUntil(lambda: tallies.fresh and tallies.tally(layer) is not None, timeout=10_000)
    watch = tallies._watches[id(layer)]
    event = SimpleNamespace(type="mouse_press")
    drag = watch._drag(layer, event)
    next(drag)  # the mouse goes down: a stroke begins
    where = (np.full(50, 20), np.full(50, 30), np.arange(50))
    old = layer.data[where].copy()
    layer.data[where] = 3  # the brush writes as it moves...
    tallies._unknown(id(layer))  # ...while a count falls due (after an undo, say)
    qtbot.wait(1200)  # the count would have run by now
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(drag)
    layer.events.paint(value=[(where, old, np.uint8(3))])  # the stroke, told at the release
    qtbot.waitUntil(lambda: tallies.fresh, timeout=10_000)
    truth = np.bincount(layer.data.ravel(), minlength=4)
    assert [tallies.tally(layer).count(v) for v in range(4)] == truth.tolist()


def test_the_sample_s_ground_truth_is_never_the_default_annotations(make_napari_viewer):
    """File > Open Sample, then the dock (and the dock first, then the sample): Train would
    learn from the strokes, and the ground truth is what Dice is measured against."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-voxseg", "cells")
    widget = VoxSegWidget(viewer)
    assert widget.labels_choice.value is viewer.layers[f"{SAMPLE} strokes"]
    assert widget.ground_truth.value is viewer.layers[f"{SAMPLE} ground truth"]

    viewer = make_napari_viewer()
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.open_sample("napari-voxseg", "cells")
    assert widget.labels_choice.value is viewer.layers[f"{SAMPLE} strokes"]
    assert widget.ground_truth.value is viewer.layers[f"{SAMPLE} ground truth"]
    # A pick of the user's stays, the ground truth too (on purpose, then).
    for pick in (viewer.layers[f"{SAMPLE} ground truth"], viewer.layers[f"{SAMPLE} strokes"]):
        widget.labels_choice.value = pick
        viewer.add_labels(np.zeros(viewer.layers[SAMPLE].data.shape, np.uint8), name="more")
        assert widget.labels_choice.value is pick
        viewer.layers.remove("more")
    # With the ground truth as the only Labels layer at first, the selected layer wins later.
    viewer = make_napari_viewer()
    widget = VoxSegWidget(viewer)
    truth = viewer.add_labels(np.zeros((4, 8, 8), np.uint8), name="truth",
                              metadata={"voxseg_ground_truth": True})
    assert widget.labels_choice.value is truth and widget.ground_truth.value is truth
    mine = viewer.add_labels(np.zeros((4, 8, 8), np.uint8), name="mine")
    assert widget.labels_choice.value is mine and widget.ground_truth.value is truth
    # Cleared by the user, the ground truth stays cleared.
    widget.ground_truth.value = None
    viewer.add_labels(np.zeros((4, 8, 8), np.uint8), name="other")
    assert widget.ground_truth.value is None
    # A prediction left as the choice (its strokes layer deleted) gives way to new strokes.
    viewer.layers.remove("mine")
    viewer.layers.remove("other")
    viewer.add_labels(np.zeros((4, 8, 8), np.uint8), name="truth prediction",
                      metadata={"voxseg_result": True})
    widget.labels_choice.value = viewer.layers["truth prediction"]
    widget.form._picked_labels = None  # as if reset_choices had fallen back to it
    fresh = viewer.add_labels(np.zeros((4, 8, 8), np.uint8), name="fresh")
    assert widget.labels_choice.value is fresh
