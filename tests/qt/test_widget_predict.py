"""Prediction in the widget: probability and uncertainty layers, lazy (dask/zarr) images done
block by block into zarr and shown lazily, and Stop during a long prediction."""

import dask.array as da
import numpy as np
import pytest
import zarr
from helpers import wait_done

from napari_voxseg._qt.widget import VoxSegWidget
from napari_voxseg.core import TrainConfig, iter_predict, run_to_end, train

SAMPLE = "voxseg sample"


@pytest.fixture(scope="module")
def model(sample):
    config = TrainConfig(iterations=8, batch_size=2, patch_size=(16, 32, 32), base_channels=4,
                         depth=2, num_threads=1)
    return train(sample.image, sample.strokes, config).model


@pytest.fixture
def viewer_widget(make_napari_viewer, model):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-voxseg", "cells")
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model = model
    assert widget.fine_tune_button.enabled  # setting the model refreshes the buttons
    return viewer, widget


def test_probability_and_uncertainty_layers(viewer_widget, qtbot, model):
    viewer, widget = viewer_widget
    widget.image_choice.value = viewer.layers[SAMPLE]
    widget.want_probabilities.value = widget.want_uncertainty.value = True
    widget.predict_button.clicked.emit()
    wait_done(qtbot, widget)
    names = [c["name"] for c in model.config["classes"]]
    probs = np.stack([viewer.layers[f"{SAMPLE} prediction probability: {n}"].data
                      for n in names])
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    uncertainty = viewer.layers[f"{SAMPLE} prediction uncertainty"]
    assert uncertainty.data.dtype == np.float32
    assert 0 <= uncertainty.data.min() and uncertainty.data.max() <= 1
    expected = run_to_end(iter_predict(model, viewer.layers[SAMPLE].data, uncertainty=True))
    np.testing.assert_allclose(uncertainty.data, expected.uncertainty, atol=1e-5)
    np.testing.assert_array_equal(viewer.layers[f"{SAMPLE} prediction"].data, expected.labels)


@pytest.mark.parametrize("kind", ["dask", "zarr"])
def test_a_lazy_image_is_predicted_block_by_block(viewer_widget, qtbot, model, tmp_path, kind):
    viewer, widget = viewer_widget
    image = viewer.layers[SAMPLE].data
    if kind == "dask":
        data = da.from_array(image, chunks=(16, 48, 48))
    else:
        data = zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=image.shape,
                               chunks=(16, 48, 48), dtype=image.dtype)
        data[:] = image
    lazy = viewer.add_image(data, name="lazy", scale=(0.5, 0.5, 0.5))
    widget.image_choice.value = lazy
    widget.want_uncertainty.value = True
    widget.predict()
    wait_done(qtbot, widget)
    layer = viewer.layers["lazy prediction"]
    assert isinstance(layer.data, da.Array)  # read from the zarr store as napari needs it
    expected = run_to_end(iter_predict(model, image, uncertainty=True))
    np.testing.assert_array_equal(np.asarray(layer.data), expected.labels)
    np.testing.assert_allclose(np.asarray(viewer.layers["lazy prediction uncertainty"].data),
                               expected.uncertainty, atol=1e-5)
    assert tuple(layer.scale) == (0.5, 0.5, 0.5)
    assert "written to" in widget.status.value


def test_stop_cancels_a_prediction(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    big = np.tile(viewer.layers[SAMPLE].data, (4, 2, 2))
    widget.image_choice.value = viewer.add_image(big, name="big")
    widget.predict()
    qtbot.waitUntil(lambda: widget.status.value.startswith("predicting"), timeout=60_000)
    widget.stop()
    wait_done(qtbot, widget)
    assert widget.status.value == "prediction cancelled"
    assert "big prediction" not in viewer.layers


def test_predict_all_open_images(viewer_widget, qtbot, model, tmp_path):
    """Every image layer is predicted in turn (a lazy one block by block), results and 2D
    layers passed over, and the image chosen before is chosen again."""
    viewer, widget = viewer_widget
    image = viewer.layers[SAMPLE].data
    viewer.add_image(image[:, ::-1].copy(), name="flipped", scale=viewer.layers[SAMPLE].scale)
    viewer.add_image(da.from_array(image, chunks=(16, 48, 48)), name="lazy")
    viewer.add_image(image[0], name="one slice")  # 2D: not a volume, not queued
    widget.image_choice.value = viewer.layers[SAMPLE]
    widget.predict_all_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running and not widget.predict_all.active,
                    timeout=300_000)
    np.testing.assert_array_equal(viewer.layers[f"{SAMPLE} prediction"].data,
                                  run_to_end(iter_predict(model, image)).labels)
    np.testing.assert_array_equal(viewer.layers["flipped prediction"].data,
                                  run_to_end(iter_predict(model, image[:, ::-1].copy())).labels)
    np.testing.assert_array_equal(np.asarray(viewer.layers["lazy prediction"].data),
                                  run_to_end(iter_predict(model, image)).labels)
    assert "one slice prediction" not in viewer.layers
    assert not any(layer.name.endswith("prediction prediction") for layer in viewer.layers)
    assert widget.image_choice.value is viewer.layers[SAMPLE]
    assert "predicted 3 images" in widget.status.value


def test_objects_of_the_prediction(viewer_widget, qtbot, model):
    """'Objects of classes' adds the instance labels of the chosen classes, in place on the
    next prediction; an unknown class is refused before any work."""
    from napari_voxseg.core.instances import instance_labels

    viewer, widget = viewer_widget
    widget.image_choice.value = viewer.layers[SAMPLE]
    widget.want_objects.value = True
    widget.object_classes.value = "2"
    widget.predict_button.clicked.emit()
    wait_done(qtbot, widget)
    labels = viewer.layers[f"{SAMPLE} prediction"].data
    objects = viewer.layers[f"{SAMPLE} prediction objects"]
    scale = tuple(viewer.layers[SAMPLE].scale[-3:])
    np.testing.assert_array_equal(objects.data, instance_labels(labels, [2], voxel_size=scale))
    assert objects.data.max() >= 1 and np.array_equal(objects.data > 0, labels == 2)
    widget.object_classes.value = "no such class"
    layers = len(viewer.layers)
    widget.predict_button.clicked.emit()
    assert not widget.running and len(viewer.layers) == layers
    assert "not a class" in widget.status.value


def test_a_time_series_is_predicted_lazily_frame_by_frame(viewer_widget, qtbot, model,
                                                           tmp_path):
    import tifffile

    from napari_voxseg.core import predict

    viewer, widget = viewer_widget
    image = viewer.layers[SAMPLE].data
    frames = np.stack([image, image[:, ::-1], image[:, :, ::-1]])  # T, Z, Y, X
    tifffile.imwrite(tmp_path / "movie.ome.tif", frames, ome=True, photometric="minisblack",
                     metadata={"axes": "TZYX", "PhysicalSizeZ": 0.5, "PhysicalSizeY": 0.5,
                               "PhysicalSizeX": 0.5})
    viewer.open(tmp_path / "movie.ome.tif", plugin="napari-voxseg")
    movie = viewer.layers["movie"]
    assert movie.data.shape == frames.shape and tuple(movie.scale) == (1.0, 0.5, 0.5, 0.5)
    widget.image_choice.value = movie
    widget.predict_button.clicked.emit()
    assert not widget.running  # nothing runs until a frame is shown
    labels = viewer.layers["movie prediction"]
    assert labels.data.shape == frames.shape and tuple(labels.scale) == tuple(movie.scale)
    np.testing.assert_array_equal(np.asarray(labels.data[2]), predict(model, frames[2]))
    # training takes one time point, not the series
    widget.train_button.clicked.emit()
    assert not widget.running and "time series" in widget.status.value
