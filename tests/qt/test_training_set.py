"""The widget's training set: more (image, annotations) pairs, trained on with the chosen one."""

import numpy as np
from helpers import wait_done

SAMPLE = "voxseg sample"


def test_two_pairs_train_one_model(sample_widget, qtbot):
    viewer, widget = sample_widget
    image, strokes = viewer.layers[SAMPLE], viewer.layers[f"{SAMPLE} strokes"]
    # a second volume: the sample cropped and flipped, at twice the voxel size in Z
    other = viewer.add_image(image.data[::2, :, ::-1].copy(), name="other",
                             scale=(1.0, 0.5, 0.5))
    other_strokes = viewer.add_labels(strokes.data[::2, :, ::-1].copy(), name="other strokes",
                                      scale=(1.0, 0.5, 0.5))
    mine = (strokes.data.copy(), other_strokes.data.copy())
    widget.image_choice.value, widget.labels_choice.value = other, other_strokes
    widget.training_set.add_button.clicked.emit()
    widget.image_choice.value, widget.labels_choice.value = image, strokes
    widget.training_set.add_button.clicked.emit()
    widget.training_set.add_button.clicked.emit()  # the same pair twice is one
    assert widget.training_set.summary.value == f"2 pair(s): other, {SAMPLE}"
    widget.iterations.value = 6
    widget.train_button.clicked.emit()
    wait_done(qtbot, widget)
    model = widget.model
    assert model.config["training"]["volumes"] == 2
    assert model.config["voxel_size"] == [0.5, 0.5, 0.5]  # the chosen pair's, first
    assert viewer.layers[f"{SAMPLE} prediction"].data.shape == image.data.shape
    np.testing.assert_array_equal(strokes.data, mine[0])  # strokes never changed
    np.testing.assert_array_equal(other_strokes.data, mine[1])

    # a pair whose layer is removed leaves the set; Clear empties it
    viewer.layers.remove(other_strokes)
    assert widget.training_set.summary.value == f"1 pair(s): {SAMPLE}"
    widget.training_set.clear_button.clicked.emit()
    assert widget.training_set.pairs == []


def test_a_training_set_refuses_other_tasks(sample_widget, qtbot):
    viewer, widget = sample_widget
    image, strokes = viewer.layers[SAMPLE], viewer.layers[f"{SAMPLE} strokes"]
    flipped = viewer.add_image(image.data[:, ::-1].copy(), name="flipped")
    viewer.add_labels(strokes.data[:, ::-1].copy(), name="flipped strokes")
    widget.image_choice.value = flipped
    widget.labels_choice.value = viewer.layers["flipped strokes"]
    widget.training_set.add_button.clicked.emit()
    widget.image_choice.value, widget.labels_choice.value = image, strokes
    widget.channels.value = [flipped]
    widget.train_button.clicked.emit()
    assert not widget.running and "one-channel images" in widget.status.value
