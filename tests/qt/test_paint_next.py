"""The Paint next section (slices to annotate next, ranked after a prediction, a click goes
there) and Export model... in the dock."""

import numpy as np
from helpers import TINY, wait_done

from napari_voxseg.core.train import TrainConfig, train

SAMPLE = "voxseg sample"


def _model(viewer):
    image = viewer.layers[SAMPLE].data
    strokes = viewer.layers[f"{SAMPLE} strokes"].data
    return train(image, strokes, TrainConfig(**TINY, two_stage=True)).model


def test_paint_next_after_a_prediction(sample_widget, qtbot):
    viewer, widget = sample_widget
    strokes = viewer.layers[f"{SAMPLE} strokes"]
    before = strokes.data.copy()
    painted = sorted({int(z) for z in np.flatnonzero(before.any(axis=(1, 2)))})
    widget.model = _model(viewer)
    paint = widget.paint_next
    assert paint.auto.value and widget.sections["Paint next"].expanded
    widget.predict_button.clicked.emit()
    wait_done(qtbot, widget)
    qtbot.waitUntil(lambda: paint.list.count() > 0 and not paint.running, timeout=120_000)
    slices = [s.slice for s in paint.suggestions]
    assert paint.list.count() == len(slices) == 5
    assert not set(painted) & set(slices) and all(s.axis == 0 for s in paint.suggestions)
    assert "paint next" not in widget.status.value  # the prediction's status stays

    # a click moves the viewer to the slice and shows where the model is unsure, faintly
    paint.list.itemClicked.emit(paint.list.item(1))
    image = viewer.layers[SAMPLE]
    assert viewer.dims.current_step[0] == slices[1]
    region = viewer.layers[f"{SAMPLE} paint next"]
    assert region.data.shape == image.data.shape and not region.editable
    others = np.delete(region.data, slices[1], axis=0)
    assert not others.any()
    assert viewer.layers.selection.active is not region
    assert widget.compare.prediction.value is not region  # no prediction to score
    np.testing.assert_array_equal(strokes.data, before)  # the strokes are never written

    # slices along the axis in view: a view across Y ranks Y slices
    viewer.dims.order = (1, 0, 2)
    paint.suggest_button.clicked.emit()
    qtbot.waitUntil(lambda: not paint.running, timeout=120_000)
    assert "paint next: slice" in widget.status.value  # asked for: said
    assert len(paint.suggestions) == 5 and all(s.axis == 1 for s in paint.suggestions)
    paint.list.itemClicked.emit(paint.list.item(0))
    assert viewer.dims.current_step[1] == paint.suggestions[0].slice


def test_paint_next_without_a_model_says_so(sample_widget):
    _, widget = sample_widget
    widget.paint_next.suggest_button.clicked.emit()
    assert "no model" in widget.status.value and not widget.paint_next.running


def test_export_model_from_the_dock(sample_widget, qtbot, tmp_path, monkeypatch):
    viewer, widget = sample_widget
    exporter = widget.exporter
    assert not exporter.export(tmp_path / "m.onnx", "onnx")  # no model yet
    assert "no model" in widget.status.value
    widget.model = _model(viewer)
    assert exporter.export(tmp_path / "m.onnx", "onnx")
    qtbot.waitUntil(lambda: not exporter.running, timeout=120_000)
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.onnx.json").is_file()
    assert "exported to" in widget.status.value
    # a two-stage model is no bioimage.io package: one line at once, no file
    assert not exporter.export(tmp_path / "m.zip", "bioimageio")
    assert "two-stage" in widget.status.value and not (tmp_path / "m.zip").exists()
    # the file exists: refused unless the dialog asked about that very file
    assert not exporter.export(tmp_path / "m.onnx", "onnx")
    assert "exists" in widget.status.value
    before = (tmp_path / "m.onnx").read_bytes()
    from qtpy.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(tmp_path / "m"), "")))
    exporter.format.value = "onnx"
    exporter.button.clicked.emit()  # "m" + ".onnx" exists, and no one was asked
    assert "exists" in widget.status.value and not exporter.running
    assert (tmp_path / "m.onnx").read_bytes() == before
