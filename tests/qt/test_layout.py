"""The dock's layout and its class list, in a real napari window under Xvfb."""

import numpy as np
from helpers import wait_done
from qtpy.QtWidgets import QApplication, QScrollArea

from napari_voxseg._napari.sample import CLASS_NAMES_KEY
from napari_voxseg._qt.widget import VoxSegWidget

SAMPLE = "voxseg sample"


def _shown_viewer(make_napari_viewer, width=1400, height=900):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(width, height)
    viewer.open_sample("napari-voxseg", "cells")
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="VoxSeg", area="right")
    for _ in range(5):
        QApplication.processEvents()
    return viewer, widget


def test_the_dock_folds_into_sections_and_leaves_the_canvas_room(make_napari_viewer):
    viewer, widget = _shown_viewer(make_napari_viewer)
    window = viewer.window._qt_window
    # The form took 42% of a 1400-px window before it folded and its choices could shrink.
    assert widget.native.width() <= 0.3 * window.width()
    assert list(widget.sections) == ["Data", "Training", "Prediction", "Paint next", "Compare",
                                     "Model"]
    assert widget.sections["Data"].expanded and not widget.sections["Training"].expanded
    assert _seen(widget.image_choice) and not _seen(widget.iterations)
    assert _seen(widget.train_button)  # the run's buttons are never folded away

    widget.sections["Training"].expand()
    widget.sections["Data"].collapse()
    for _ in range(5):
        QApplication.processEvents()
    assert _seen(widget.iterations) and not _seen(widget.image_choice)

    # A long status wraps, and gets the lines it needs (not one line, cut).
    widget.status.value = "short"
    QApplication.processEvents()
    widget.status.value = " ".join(["a status that wraps onto several lines"] * 4)
    for _ in range(5):
        QApplication.processEvents()
    label = widget.status.native
    assert label.height() >= label.heightForWidth(label.width()) > 2 * label.fontMetrics().height()

    # Taller than the window: it scrolls instead of squeezing or growing the window.
    for section in widget.sections.values():
        section.expand()
    window.resize(1400, 500)
    for _ in range(5):
        QApplication.processEvents()
    scroll = widget.native.findChild(QScrollArea, "voxseg scroll")
    assert scroll.verticalScrollBar().maximum() > 0
    assert widget.native.width() <= 0.3 * window.width()


def test_the_class_list_names_colours_and_adds_classes(sample_widget, qtbot):
    viewer, widget = sample_widget
    strokes = viewer.layers[f"{SAMPLE} strokes"]
    before = strokes.data.copy()
    classes = widget.class_list
    qtbot.waitUntil(lambda: bool(classes.painted()), timeout=10_000)
    assert classes.names() == ["background", "nucleus", "tube"]  # the sample's
    swatch, name, count = classes.rows[1]
    assert name.text() == "nucleus"
    assert count.text() == f"{int((strokes.data == 2).sum()):,} vox"
    assert swatch.styleSheet().startswith(f"background-color: {_hex(strokes.get_color(2))}")

    # A name typed in is kept on the layer (and so in the model and the result layers).
    name.setText("nuclei")
    name.editingFinished.emit()
    assert strokes.metadata[CLASS_NAMES_KEY] == ["background", "nuclei", "tube"]

    # "+" adds class 4 and selects it for the brush; a colour click selects its class.
    classes.add_button.click()
    assert strokes.selected_label == 4 and strokes.mode == "paint"
    assert viewer.layers.selection.active is strokes
    assert classes.count() == 4 and classes.rows[3][0].isVisibleTo(classes)
    classes.rows[0][0].click()
    assert strokes.selected_label == 1

    widget.iterations.value = 3
    widget.want_probabilities.value = True
    widget.train()
    wait_done(qtbot, widget)
    names = [c["name"] for c in widget.model.config["classes"]]
    assert names == ["background", "nuclei", "tube"]
    assert f"{SAMPLE} prediction probability: nuclei" in viewer.layers
    prediction = viewer.layers[f"{SAMPLE} prediction"]
    assert list(prediction.features["class"]) == ["none", "background", "nuclei", "tube"]
    assert prediction.metadata[CLASS_NAMES_KEY] == names
    np.testing.assert_array_equal(strokes.data, before)  # only the names were written

    # A new annotation layer has no names of its own: it shows the model's.
    fresh = widget.new_annotations()
    assert widget.labels_choice.value is fresh
    assert classes.names() == ["background", "nuclei", "tube"]
    assert CLASS_NAMES_KEY not in fresh.metadata
    classes.rename(3, "vessel")  # the others keep the names shown (the model's)
    assert fresh.metadata[CLASS_NAMES_KEY] == ["background", "nuclei", "vessel"]
    classes.rename(3, "")  # an empty name gives back the default
    assert classes.names() == ["background", "nuclei", "class 3"]


def test_the_class_list_is_for_multiclass_only(sample_widget):
    _viewer, widget = sample_widget
    assert widget.class_list.isVisibleTo(widget.native)
    widget.task.value = "multilabel"
    assert not widget.class_list.isVisibleTo(widget.native)
    widget.task.value = "regression"
    assert not widget.class_list.isVisibleTo(widget.native)


def _seen(field) -> bool:
    """Whether any of ``field`` shows on the screen (a folded section clips it to nothing)."""
    return field.native.isVisible() and not field.native.visibleRegion().isEmpty()


def _hex(rgba):
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgba[:3])
