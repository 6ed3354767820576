"""The Compare section: a prediction layer against a ground-truth layer, scored in the dock."""

import csv

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from napari_voxseg.core.metrics import class_report

SAMPLE = "voxseg sample"


def test_compare_scores_a_prediction_against_the_ground_truth(sample_widget, qtbot, tmp_path):
    viewer, widget = sample_widget
    truth = viewer.layers[f"{SAMPLE} ground truth"]
    guess = truth.data.copy()
    guess[:, :, :4] = 1  # a few columns of voxels wrong
    layer = viewer.add_labels(guess, name="guess", scale=truth.scale,
                              metadata={"voxseg_result": True,
                                        "voxseg_class_names": ["bg", "nucleus", "tube"]})
    compare = widget.compare
    assert compare.prediction.value is layer and compare.truth.value is truth  # the defaults
    before = truth.data.copy()
    compare.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not compare.running, timeout=60_000)
    expected = class_report(guess, truth.data, tuple(truth.scale))
    assert compare.report.keys() == expected.keys()
    for c, row in expected.items():
        for name, value in row.items():
            assert compare.report[c][name] == (pytest.approx(value) if name != "note"
                                               else value)
    table = compare.table
    assert table.rowCount() == len(expected) + 1  # the classes and the mean
    assert table.item(1, 1).text() == "nucleus"
    assert table.item(1, 2).text() == f"{expected[2]['dice']:.4f}"

    text = compare.copy()
    assert QApplication.clipboard().text() == text
    assert text.splitlines()[0].split("\t")[:4] == ["class", "name", "dice", "iou"]
    saved = compare.save_csv(tmp_path / "scores.csv")
    with open(saved, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == compare.rows() and rows[-1][0] == "mean"
    np.testing.assert_array_equal(truth.data, before)  # nothing written to the layers

    # A user's pick stays when layers come and go; a shape mismatch is refused in one line.
    compare.truth.value = layer
    viewer.add_labels(np.zeros((4, 4, 4), np.uint8), name="small")
    assert compare.truth.value is layer
    compare.prediction.value = viewer.layers["small"]
    compare.run()
    assert "shape" in widget.status.value and not compare.running
    import dask.array as da

    lazy = viewer.add_labels(da.from_array(guess), name="lazy", scale=truth.scale)
    compare.prediction.value = lazy
    compare.run()
    assert "lazily" in widget.status.value and not compare.running
