"""Interactive training in a real viewer: live previews, strokes joining a running training,
the loss curve, Stop / Continue / Fine-tune, and layers or the viewer going away mid-run. The
U-Net's own live loop runs with one stage here; the two stages' first overlay, held-out score
and refits on new strokes are the last test."""

import numpy as np
import pytest
from helpers import wait_done
from napari.components import ViewerModel

from napari_voxseg._qt.view import PREVIEW_TILES_2D, PREVIEW_TILES_3D, camera
from napari_voxseg._qt.widget import VoxSegWidget, view_region
from napari_voxseg.core.train import FINE_TUNE_LR_FACTOR

SAMPLE = "voxseg sample"


@pytest.fixture
def live(sample_widget):
    viewer, widget = sample_widget
    widget.preview_every.value = 1
    widget.iterations.value = 100_000
    widget.two_stage.value = False
    viewer.dims.set_point(0, 10 * 0.5)  # slice 10, which has no strokes
    return viewer, widget


def steps_done(widget):
    return widget.model.config["training"]["steps_done"]


def test_previews_follow_the_view_and_new_strokes_join(live, qtbot):
    viewer, widget = live
    strokes = viewer.layers[f"{SAMPLE} strokes"]
    widget.ground_truth.value = viewer.layers[f"{SAMPLE} ground truth"]
    widget.train_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget.previews) >= 1, timeout=60_000)

    # The first preview covers the slice in view and its neighbours, the whole plane.
    first = widget.previews[0]
    z = first["region"][0]
    assert z.start <= 10 < z.stop and z.stop - z.start < 48
    assert first["region"][1:] == (slice(0, 96), slice(0, 96))
    prediction = viewer.layers[f"{SAMPLE} prediction"]
    assert prediction.data.shape == strokes.data.shape
    assert set(np.unique(prediction.data[10])) <= {1, 2, 3}  # predicted in view
    assert not prediction.data[40].any()  # not yet outside it
    assert "dice" in first and 0 <= first["dice"] <= 1
    assert widget.curve.losses and widget.curve.dice.points
    assert widget.status.value.startswith("step") and "left" in widget.status.value

    # Paint on slice 10 while training runs, as the brush does (data_setitem emits `paint`).
    before = widget.last_train_event.annotated
    painted = np.zeros(strokes.data.shape, bool)
    painted[10, 30:60, 5] = True  # background, left edge
    painted[10, 5, 30:60] = True
    strokes.data_setitem(np.nonzero(painted), 1)
    painted_at = len(widget.previews)
    qtbot.waitUntil(lambda: len(widget.previews) > painted_at + 1, timeout=60_000)
    # The next refresh trained on them: more annotated voxels in the event and the preview.
    assert widget.previews[-1]["annotated"] == before + int(painted.sum())
    assert widget.last_train_event.annotated == before + int(painted.sum())

    # A brush dab (napari records a masked box) joins too; an undo, which napari reports with
    # no paint or data event, takes it away again.
    with_line = np.count_nonzero(strokes.data)
    strokes.brush_size = 6
    strokes.paint((10, 70, 70), 2)
    dab = np.count_nonzero(strokes.data) - with_line
    assert dab > 0
    count = len(widget.previews)
    qtbot.waitUntil(lambda: len(widget.previews) > count + 1, timeout=60_000)
    assert widget.last_train_event.annotated == before + int(painted.sum()) + dab
    strokes.undo()
    count = len(widget.previews)
    qtbot.waitUntil(lambda: len(widget.previews) > count + 1, timeout=60_000)
    assert widget.last_train_event.annotated == before + int(painted.sum())

    # Moving to another slice moves the preview there.
    viewer.dims.set_point(0, 40 * 0.5)
    count = len(widget.previews)
    qtbot.waitUntil(lambda: len(widget.previews) > count + 1, timeout=60_000)
    z = widget.previews[-1]["region"][0]
    assert z.start <= 40 < z.stop
    assert set(np.unique(prediction.data[40])) <= {1, 2, 3} and prediction.data[40].all()

    widget.stop_button.clicked.emit()
    wait_done(qtbot, widget)
    assert (strokes.data[painted] == 1).all()  # the strokes are all still there


def test_stop_continue_and_fine_tune(live, qtbot):
    viewer, widget = live
    strokes = viewer.layers[f"{SAMPLE} strokes"]
    before = strokes.data.copy()
    widget.iterations.value = 60
    widget.preview_every.value = 0  # previews off: only the final prediction
    assert not widget.continue_button.enabled and not widget.fine_tune_button.enabled
    widget.train()
    qtbot.waitUntil(lambda: widget.last_train_event is not None
                    and widget.last_train_event.step >= 5, timeout=60_000)
    widget.stop()
    wait_done(qtbot, widget)
    stopped_at = steps_done(widget)
    assert 5 <= stopped_at < 60 and widget.status.value.startswith("stopped")
    assert widget.continue_button.enabled and widget.fine_tune_button.enabled
    assert widget.previews == [] and len(widget.curve.losses) == stopped_at

    # Continue goes on from the step it stopped at, to the end of the same schedule.
    seen = []

    def record(event):
        seen.append(getattr(event, "step", None))

    widget.session.yielded.connect(record)  # every event of the run, on the main thread
    widget.continue_button.clicked.emit()
    wait_done(qtbot, widget, timeout=120_000)
    widget.session.yielded.disconnect(record)
    steps = [s for s in seen if s is not None]
    assert steps[0] == stopped_at + 1 and steps[-1] == 60
    assert steps_done(widget) == 60 and not widget.continue_button.enabled
    assert len(widget.curve.losses) == 60  # one curve across both parts

    # Fine-tune: the same model, more steps, a tenth of the learning rate.
    widget.iterations.value = 6
    trained = widget.model
    widget.fine_tune_button.clicked.emit()
    assert widget.running and widget.model is trained  # the model in use stays whole
    wait_done(qtbot, widget)
    assert widget.model is not trained
    training = widget.model.config["training"]
    assert training["steps_done"] == 66
    assert training["learning_rate"] == pytest.approx(3e-3 * FINE_TUNE_LR_FACTOR)
    np.testing.assert_array_equal(strokes.data, before)


def test_predict_during_training_predicts_the_whole_volume(live, qtbot):
    viewer, widget = live
    widget.preview_every.value = 600  # no timed preview within the test
    widget.train()
    qtbot.waitUntil(lambda: widget.last_train_event is not None, timeout=60_000)
    assert widget.predict_button.enabled
    widget.predict_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget.previews) == 1, timeout=60_000)
    assert widget.previews[0]["region"] == (slice(0, 48), slice(0, 96), slice(0, 96))
    assert viewer.layers[f"{SAMPLE} prediction"].data.all()
    widget.stop()
    wait_done(qtbot, widget)


def test_removing_a_layer_in_use_stops_training(live, qtbot):
    viewer, widget = live
    widget.train()
    qtbot.waitUntil(lambda: widget.last_train_event is not None, timeout=60_000)
    viewer.layers.remove(f"{SAMPLE} strokes")
    wait_done(qtbot, widget, timeout=30_000)
    assert "removed" in widget.status.value
    assert widget.model is not None  # what it learned is kept
    assert widget.session.job is None and widget.train_button.enabled


def test_closing_the_viewer_mid_training_stops_cleanly(live, qtbot):
    viewer, widget = live
    widget.train()
    qtbot.waitUntil(lambda: len(widget.previews) >= 1, timeout=60_000)
    job = widget.session.job
    viewer.close()
    assert job.done.is_set()  # the worker ended while the window closed, no thread left
    assert not widget.running


def test_view_region_in_2d_and_3d(live):
    viewer, widget = live
    layer = viewer.layers[SAMPLE]
    patch = (32, 48, 48)
    viewer.dims.set_point(0, 47 * 0.5)
    region = view_region(viewer, layer, patch)
    assert region[0] == slice(40, 48) and region[1:] == (slice(0, 96), slice(0, 96))
    viewer.dims.ndisplay = 3
    region = view_region(viewer, layer, patch)
    assert region == (slice(0, 48), slice(0, 96), slice(0, 96))  # all of a small volume


def test_view_region_is_cut_to_the_volume_at_any_zoom():
    """A view partly outside the volume, a camera zoomed far out (PREVIEW_TILES_2D tiles at
    most) or far in (the voxels at the centre), a view that misses the volume (None), and in
    3D a block of PREVIEW_TILES_3D tiles moved inside the volume, whatever the zoom."""
    viewer = ViewerModel()
    viewer.canvas.size = (400, 600)
    layer = viewer.add_image(np.zeros((8, 1000, 1000), np.float32), scale=(2.0, 0.5, 0.5),
                             translate=(0.0, 100.0, 0.0))
    patch = (8, 48, 48)
    cam = camera(viewer)

    def centre(y, x, z=0.0):  # the camera's centre on voxel (y, x), in world coordinates
        cam.center = (z, 100.0 + 0.5 * y, 0.5 * x)

    half = PREVIEW_TILES_2D * 48 // 2
    viewer.dims.set_point(0, 2.0 * 3)  # slice 3, and one on each side (patch 8 // 4 - 1)
    cam.zoom = 1e-4  # far out: the whole volume is on the canvas
    centre(500, 500)
    assert view_region(viewer, layer, patch) == (slice(2, 5), slice(500 - half, 500 + half),
                                                 slice(500 - half, 500 + half))
    centre(10, 990)  # partly outside, above and to the right
    assert view_region(viewer, layer, patch) == (slice(2, 5), slice(0, 10 + half),
                                                 slice(990 - half, 1000))
    viewer.dims.set_point(0, 0.0)  # the first slice: the one before it is outside
    assert view_region(viewer, layer, patch)[0] == slice(0, 2)
    cam.zoom = 1e4  # far in: the voxels at the centre
    centre(500, 500)
    assert view_region(viewer, layer, patch)[1:] == (slice(499, 501), slice(499, 501))
    centre(-500, 500)  # the view misses the volume
    assert view_region(viewer, layer, patch) is None

    viewer.dims.ndisplay = 3
    centre(990, 10, z=8.0)
    block = PREVIEW_TILES_3D * 48
    for zoom in (1e-4, 1e4):
        cam.zoom = zoom
        assert view_region(viewer, layer, patch) == (slice(0, 8), slice(1000 - block, 1000),
                                                     slice(0, block))


def test_a_prediction_being_corrected_is_never_written(live, qtbot):
    viewer, widget = live
    widget.iterations.value = 5
    widget.preview_every.value = 0
    widget.train()
    wait_done(qtbot, widget)
    # The user takes the prediction as annotations, corrects it, and trains again with previews.
    corrected = viewer.layers[f"{SAMPLE} prediction"]
    corrected.data_setitem(np.nonzero(np.ones((1, 4, 4), bool)), 2)
    before = corrected.data.copy()
    widget.labels_choice.value = corrected
    widget.iterations.value = 100_000
    widget.preview_every.value = 1
    widget.train()
    qtbot.waitUntil(lambda: len(widget.previews) >= 2, timeout=60_000)
    widget.stop()
    wait_done(qtbot, widget)
    np.testing.assert_array_equal(corrected.data, before)
    assert viewer.layers[f"{SAMPLE} prediction (new)"].data.all()


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_previews_for_the_other_tasks(make_napari_viewer, qtbot, task):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-voxseg", f"cells_{task}")
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_choice.value = viewer.layers[SAMPLE]
    widget.task.value = task
    if task == "multilabel":
        widget.multi_labels.value = [viewer.layers[f"{SAMPLE} {n}"] for n in ("object", "tube")]
        names = [f"{SAMPLE} prediction: {n}" for n in ("object", "tube")]
    else:
        widget.target_choice.value = viewer.layers[f"{SAMPLE} distance"]
        widget.mask_choice.value = viewer.layers[f"{SAMPLE} known"]
        names = [f"{SAMPLE} prediction"]
    widget.preview_every.value = 1
    widget.iterations.value = 100_000
    viewer.dims.set_point(0, 20 * 0.5)
    widget.train()
    qtbot.waitUntil(lambda: len(widget.previews) >= 1, timeout=60_000)
    for name in names:
        layer = viewer.layers[name]
        assert layer.data.shape == viewer.layers[SAMPLE].data.shape
        if task == "multilabel":  # two stages: stage 1's overlay of the whole volume first
            assert widget.previews[0]["stage"] == 1
            assert set(np.unique(layer.data)) == {1, 2}
        else:
            assert layer.data.dtype == np.float32 and np.isfinite(layer.data).all()
    widget.stop()
    wait_done(qtbot, widget)


def test_two_stages_show_stage_1_first_then_judge_and_refit(sample_widget, qtbot):
    viewer, widget = sample_widget
    strokes = viewer.layers[f"{SAMPLE} strokes"]
    before = strokes.data.copy()
    assert widget.two_stage.value and not widget.two_stage.native.isHidden()  # the default
    widget.ground_truth.value = viewer.layers[f"{SAMPLE} ground truth"]
    widget.iterations.value = 100_000
    widget.preview_every.value = 1
    widget.train_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget.previews) >= 1, timeout=60_000)
    first = widget.previews[0]
    assert first["stage"] == 1 and first["step"] == 0  # before any step of the U-Net
    assert first["region"] == (slice(0, 48), slice(0, 96), slice(0, 96))  # the whole volume
    prediction = viewer.layers[f"{SAMPLE} prediction"]
    assert prediction.data.all() and first["dice"] > 0.8
    assert widget.status.value.startswith("stage 1 overlay")

    # The held-out score shows once the U-Net has been judged against stage 1.
    qtbot.waitUntil(lambda: not widget.validation.native.isHidden(), timeout=120_000)
    assert "stage 1" in widget.validation.value and "U-Net" in widget.validation.value

    # New strokes refit stage 1 at once: a new whole-volume overlay counting them.
    shown = len(widget.previews)
    painted = np.zeros(strokes.data.shape, bool)
    painted[10, 30:60, 5] = True
    strokes.data_setitem(np.nonzero(painted), 1)
    total = int(np.count_nonzero(strokes.data))
    qtbot.waitUntil(lambda: any(p["stage"] == 1 and p["annotated"] == total
                                for p in widget.previews[shown:]), timeout=120_000)
    widget.stop_button.clicked.emit()
    wait_done(qtbot, widget)
    kept = widget.model.config["training"]["validation"]["kept"]
    assert f"kept {kept}" in widget.model_info.value
    assert widget.model.stage1 is not None
    np.testing.assert_array_equal(strokes.data[~painted], before[~painted])
