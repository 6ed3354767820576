"""The class list: the classes of the annotation layer, with their napari colours, editable
names and stroke counts, and a **+** that adds a class and selects it for the brush.

The names live in the annotation layer's metadata (``voxseg_class_names``: the names of
classes 1, 2, ...), so that they travel with the layer; training stores them in the model,
and the result layers, probability layers and scores are named after them. A class without a
name there takes the loaded model's name for it, else ``class N``. Clicking a colour selects
that class for the brush. Only the metadata is written: never the layer's data.
"""

from __future__ import annotations

import napari
import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .._napari.sample import CLASS_NAMES_KEY as NAMES_KEY
from .results import layer_class_names

MAX_ROWS = 24  # an instance layer chosen by mistake would have thousands of "classes"
MAX_CLASSES = 1000  # past this, a layer's values are object ids, not classes: not all named


def store_class_name(layer, label: int, name: str, shown: list[str]) -> None:
    """Name class ``label`` (1-based) on ``layer``; the other classes keep the names
    ``shown`` for them (the layer's, or the model's where the layer had none)."""
    names = list(shown) + [f"class {i + 1}" for i in range(len(shown), label)]
    names[label - 1] = name
    layer.metadata = {**layer.metadata, NAMES_KEY: names}


def _hex(rgba) -> str:
    colour = QColor.fromRgbF(*(float(c) for c in rgba[:3]))
    return colour.name()


class ClassList(QWidget):
    """Rows of (colour, name, strokes) for the classes of ``form``'s annotation layer; shown
    for the multi-class task only. ``model_names()`` gives the loaded model's class names."""

    def __init__(self, form, model_names=lambda: []):
        super().__init__()
        self.form, self.model_names = form, model_names
        self.layer = None
        self.setObjectName("voxseg class list")
        self._grid = QGridLayout()
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(4)
        self._grid.setVerticalSpacing(2)
        self.add_button = QPushButton("+ class")
        self.add_button.setToolTip("Add a class and select it for the brush")
        self.add_button.clicked.connect(self.add_class)
        self.more = QLabel("")
        bottom = QHBoxLayout()
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(self.more, 1)
        bottom.addWidget(self.add_button)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(self._grid)
        outer.addLayout(bottom)
        self.rows: list[tuple[QToolButton, QLineEdit, QLabel]] = []
        self._extra = 0  # classes added with "+" and not painted yet
        for signal in (form.labels_choice.changed, form.task.changed, form.classes.changed):
            signal.connect(self.follow_layer)
        form.tallies.changed.connect(self.refresh)
        self.follow_layer()

    # ---- what is shown ------------------------------------------------------------------
    def follow_layer(self, _value=None) -> None:
        """Show the classes of the chosen annotation layer (multi-class only)."""
        layer = self.form.labels_choice.value if self.form.task.value == "multiclass" else None
        if layer is not self.layer:
            self._disconnect()
            self.layer, self._extra = layer, 0
            if layer is not None:
                layer.events.colormap.connect(self.refresh)
                layer.events.selected_label.connect(self.refresh)
        self.setVisible(layer is not None)
        self.refresh()

    def _disconnect(self) -> None:
        if self.layer is not None:
            self.layer.events.colormap.disconnect(self.refresh)
            self.layer.events.selected_label.disconnect(self.refresh)

    def painted(self) -> dict[int, int]:
        """Stroke voxels per class of the layer (from the form's tallies; empty while
        counting)."""
        tally = self.form.tallies.tally(self.layer) if self.layer is not None else None
        return {int(k): int(v) for k, v in (tally.counts if tally else {}).items() if k > 0}

    def count(self) -> int:
        """How many classes there are: the most of the classes box, the largest class painted,
        the names stored or the model's, and the classes added with "+"; at least 2."""
        if self.layer is None:
            return 0
        painted = self.painted()
        return min(MAX_CLASSES, max(2, int(self.form.classes.value), max(painted, default=0),
                                    len(layer_class_names(self.layer)), len(self.model_names()),
                                    self._extra))

    def names(self, count: int | None = None) -> list[str]:
        """The names of classes 1..count: the layer's, else the model's, else 'class N'."""
        count = self.count() if count is None else count
        stored, model = layer_class_names(self.layer), list(self.model_names())
        return [stored[i] if i < len(stored) else model[i] if i < len(model) else
                f"class {i + 1}" for i in range(count)]

    def refresh(self, _event=None) -> None:
        if self.layer is None:
            return
        count = self.count()
        shown = min(count, MAX_ROWS)
        while len(self.rows) < shown:
            self._add_row()
        names, painted = self.names(count), self.painted()
        selected = int(self.layer.selected_label)
        for i, (swatch, name, strokes) in enumerate(self.rows):
            label, visible = i + 1, i < shown
            for part in (swatch, name, strokes):
                part.setVisible(visible)
            if not visible:
                continue
            colour = _hex(self.layer.get_color(label))
            border = "2px solid white" if label == selected else "1px solid gray"
            swatch.setStyleSheet(f"background-color: {colour}; border: {border};")
            swatch.setText(str(label))
            if not name.hasFocus() and name.text() != names[i]:
                name.setText(names[i])
            strokes.setText(f"{painted.get(label, 0):,} vox")
        self.more.setText(f"{count - shown} more not listed" if count > shown else "")

    def _add_row(self) -> None:
        label = len(self.rows) + 1
        swatch = QToolButton()
        swatch.setFixedSize(26, 20)
        swatch.setToolTip("Paint this class")
        swatch.clicked.connect(lambda _=False, k=label: self.select(k))
        name = QLineEdit()
        name.setToolTip("The class's name, stored in the model and used for the result "
                        "layers and scores")
        name.editingFinished.connect(lambda k=label, box=name: self.rename(k, box.text()))
        strokes = QLabel("")
        strokes.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        strokes.setToolTip("Voxels painted with this class")
        row = len(self.rows)
        self._grid.addWidget(swatch, row, 0)
        self._grid.addWidget(name, row, 1)
        self._grid.addWidget(strokes, row, 2)
        self.rows.append((swatch, name, strokes))

    # ---- what the user does -------------------------------------------------------------
    def rename(self, label: int, text: str) -> None:
        """Name class ``label``; an empty name gives it back its default."""
        if self.layer is None:
            return
        shown = self.names(max(self.count(), label))
        text = text.strip() or f"class {label}"
        if text != shown[label - 1]:
            store_class_name(self.layer, label, text, shown)
        if label <= len(self.rows):
            self.rows[label - 1][1].setText(text)
        self.refresh()

    def select(self, label: int) -> None:
        """Paint class ``label``: the layer becomes the selected one, in paint mode."""
        if self.layer is None:
            return
        viewer = self.form.viewer
        if self.layer in viewer.layers:
            viewer.layers.selection.active = self.layer
        self.layer.selected_label = label
        if isinstance(self.layer, napari.layers.Labels):
            self.layer.mode = "paint"
        self.refresh()

    def add_class(self) -> None:
        """A new class after the last one, selected for the brush."""
        if self.layer is None:
            return
        new = self.count() + 1
        dtype = np.asarray(self.layer.data[(0,) * self.layer.data.ndim]).dtype
        if np.issubdtype(dtype, np.integer) and new > np.iinfo(dtype).max:
            show_warning(f"{self.layer.name} holds {dtype} values, at most "
                         f"{np.iinfo(dtype).max}: it has no room for class {new}")
            return
        self._extra = new
        self.select(new)
