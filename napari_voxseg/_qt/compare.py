"""The Compare section: a labels layer (a prediction) against a ground-truth layer, scored per
class as ``voxseg evaluate`` does (Dice, IoU, precision, recall, HD95, ASSD in the ground
truth's scale units), in a table that can be copied (tab-separated, for a spreadsheet) and saved
as CSV. The scores are computed in a background thread: the surface distances take seconds
on large volumes. Nothing is written to either layer.
"""

from __future__ import annotations

import csv
import math
from contextlib import contextmanager
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, PushButton
from qtpy.QtWidgets import QApplication, QFileDialog, QTableWidget, QTableWidgetItem

from ..core.folders import replacing_file
from ..core.metrics import SCORES, class_report
from .results import layer_class_names, spatial
from .workers import start_worker


class Compare:
    """Its fields (``prediction``, ``truth``, ``surface``), buttons (``run_button``,
    ``copy_button``, ``save_button``), the ``table`` (Qt) and the last ``report``."""

    def __init__(self, viewer, say):
        self.viewer, self.say = viewer, say
        self.prediction = ComboBox(label="Prediction", choices=self._labels,
                                   tooltip="The labels to score (e.g. '<image> prediction')")
        self.truth = ComboBox(label="Against", choices=self._labels,
                              tooltip="The ground truth: a Labels layer of the same shape")
        self.surface = CheckBox(text="Surface distances (HD95, ASSD)", value=True,
                                tooltip="The slow part on large volumes")
        self.run_button = PushButton(text="Compare")
        self.copy_button = PushButton(text="Copy", enabled=False,
                                      tooltip="Copy the table, tab-separated (for a "
                                              "spreadsheet)")
        self.save_button = PushButton(text="Save CSV...", enabled=False)
        self.buttons = Container(widgets=[self.run_button, self.copy_button, self.save_button],
                                 layout="horizontal", labels=False)
        self.buttons.margins = (0, 0, 0, 0)
        self.table = QTableWidget(0, 0)
        self.table.setObjectName("voxseg compare table")
        self.table.setMinimumHeight(90)
        self.table.verticalHeader().setVisible(False)  # the class column numbers the rows
        self.report: dict | None = None
        self.names: list[str] = []
        self.units = ""
        self._picked: set[str] = set()  # the boxes the user chose in (defaults leave them)
        self._choosing = False
        for key, box in (("prediction", self.prediction), ("truth", self.truth)):
            box.changed.connect(lambda _value, k=key: self._note_pick(k))
        self.run_button.changed.connect(self.run)
        self.copy_button.changed.connect(self.copy)
        self.save_button.changed.connect(self._save_clicked)
        self._worker = None

    @property
    def fields(self) -> list:
        return [self.prediction, self.truth, self.surface, self.buttons, self.table]

    @contextmanager
    def choosing(self):
        """Changes of the boxes within are the widget's (a reset, a default), not picks."""
        self._choosing = True
        try:
            yield
        finally:
            self._choosing = False

    def _note_pick(self, key: str) -> None:
        if not self._choosing:
            self._picked.add(key)

    def choose_defaults(self) -> None:
        """Until the user picks: the newest result layer (a prediction) against the newest
        layer marked as ground truth (the sample's)."""
        from .form import is_ground_truth
        from .results import HINT_KEY, RESULT_KEY

        labels = [layer for _, layer in self._labels()]
        # a prediction of classes: not its objects (instance ids), not a lazy or time series,
        # not Paint next's region
        results = [layer for layer in labels if layer.metadata.get(RESULT_KEY)
                   and not layer.metadata.get(HINT_KEY)
                   and " objects" not in layer.name and _comparable(layer) is None]
        truths = [layer for layer in labels if is_ground_truth(layer)]
        with self.choosing():
            if results and "prediction" not in self._picked:
                self.prediction.value = results[-1]
            if truths and "truth" not in self._picked:
                self.truth.value = truths[-1]

    def _labels(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, napari.layers.Labels)]

    def run(self) -> None:
        """Score the chosen layers in a background thread; the table follows when done."""
        pred, truth = self.prediction.value, self.truth.value
        if pred is None or truth is None or pred is truth:
            self.say("choose a prediction and a different ground-truth Labels layer to "
                     "compare")
            return
        for layer in (pred, truth):
            problem = _comparable(layer)
            if problem:
                self.say(f"{layer.name} {problem}")
                return
        if tuple(pred.data.shape) != tuple(truth.data.shape):
            self.say(f"{pred.name} has shape {tuple(pred.data.shape)} but {truth.name} has "
                     f"{tuple(truth.data.shape)}; compare layers of the same volume")
            return
        voxel = tuple(float(v) for v in spatial(truth)[0])
        units = "voxel " + " x ".join(f"{v:g}" for v in voxel)
        names = layer_class_names(pred) or layer_class_names(truth)
        self.run_button.enabled = self.copy_button.enabled = self.save_button.enabled = False
        self.say(f"comparing {pred.name} with {truth.name}...")
        self._worker = start_worker(
            _scored, np.array(pred.data), np.array(truth.data), voxel, bool(self.surface.value),
            names, units, returned=self._show, finished=self._done,
            errored=lambda exc: self.say(f"could not compare: {exc or type(exc).__name__}"))

    def _done(self) -> None:
        self.run_button.enabled = True
        self._worker = None

    @property
    def running(self) -> bool:
        return self._worker is not None

    def rows(self) -> list[list[str]]:
        """The table as text: a header, then one row per class and the mean."""
        report = self.report or {}
        columns = [c for c in SCORES if any(c in row for row in report.values())]
        header = ["class", "name", *columns, "note"]
        rows = [header]
        for c, row in report.items():
            name = self.names[c - 1] if c - 1 < len(self.names) else f"class {c}"
            rows.append([str(c), name, *(_number(row[k]) for k in columns),
                         str(row.get("note", ""))])
        means = [[row[k] for row in report.values() if math.isfinite(row[k])]
                 for k in columns]
        rows.append(["mean", "", *(_number(sum(v) / len(v)) if v else "" for v in means),
                     f"distances in {self.units}" if "hd95" in columns else ""])
        return rows

    def _show(self, scored: tuple) -> None:
        self.report, self.names, self.units = scored
        rows = self.rows()
        self.table.setColumnCount(len(rows[0]))
        self.table.setRowCount(len(rows) - 1)
        self.table.setHorizontalHeaderLabels(rows[0])
        for i, row in enumerate(rows[1:]):
            for j, text in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.copy_button.enabled = self.save_button.enabled = True
        self.say("compared; the table can be copied or saved as CSV")

    def copy(self) -> str:
        """Put the table on the clipboard, tab-separated; returns the text."""
        text = "\n".join("\t".join(row) for row in self.rows())
        QApplication.clipboard().setText(text)
        return text

    def save_csv(self, path) -> Path:
        """Write the table to the CSV file ``path``, whole or not at all (a temporary file
        renamed into place). The save dialog asks before it replaces a file."""
        path = Path(path)
        with replacing_file(path) as tmp, open(tmp, "w", newline="") as handle:
            csv.writer(handle).writerows(self.rows())
        return path

    def _save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(None, "Save the scores", "scores.csv",
                                              "CSV (*.csv)")
        if not path:
            return
        path = Path(path) if Path(path).suffix else Path(path).with_suffix(".csv")
        sources = [layer.source.path for layer in self.viewer.layers if layer.source.path]
        if any(Path(s).resolve() == path.resolve() for s in sources):
            self.say(f"{path.name} is a file a layer was opened from; choose another name")
            return
        try:
            self.say(f"scores saved to {self.save_csv(path)}")
        except OSError as exc:
            self.say(f"could not save the scores to {path}: {exc.strerror or exc}; choose a "
                     "folder you can write to")


def _scored(pred, truth, voxel, surface: bool, names, units) -> tuple:
    """(the class report, the class names, the distance units): what the table shows,
    kept together so that a later run's names never label an earlier run's scores."""
    return class_report(pred, truth, voxel, surface=surface), names, units


def _comparable(layer) -> str | None:
    """Why ``layer`` cannot be compared here, or None: a 3D layer held in memory."""
    if not isinstance(layer.data, np.ndarray):
        return ("is read lazily (dask or zarr); save it and use 'voxseg evaluate', which "
                "reads it whole")
    if layer.data.ndim != 3:
        return f"is {layer.data.ndim}D; Compare scores 3D labels (Z, Y, X)"
    return None


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
