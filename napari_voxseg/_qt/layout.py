"""How the dock is laid out: the form folds into sections (Data, Training, Prediction, Compare,
Model) that collapse, the whole scrolls when taller than the window, and no field asks for more
width than a narrow dock has (long choices are cut in the closed box and shown whole when
open).
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, Label
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget
from superqt import QCollapsible

COMBO_CHARACTERS = 14  # a closed choice box shows at least this many characters


def compact(widgets) -> None:
    """Let ``widgets`` (magicgui, any depth of containers) shrink to a narrow dock: choice
    boxes take their width from the dock, not from their longest choice, and texts wrap."""
    for widget in widgets:
        if isinstance(widget, Container):
            compact(list(widget))
        elif isinstance(widget, ComboBox):
            box: QComboBox = widget.native
            box.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(COMBO_CHARACTERS)
            box.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        elif isinstance(widget, Label):
            widget.native.setWordWrap(True)
            widget.native.setSizePolicy(QSizePolicy.Policy.Expanding,
                                        QSizePolicy.Policy.Preferred)


def _all(container):
    """Every magicgui widget in ``container``, at any depth."""
    for widget in container:
        yield widget
        if isinstance(widget, Container):
            yield from _all(widget)


class Section:
    """A titled part of the form that collapses: ``items``, magicgui widgets (laid out with
    their labels) and native Qt widgets (across the whole width), in order. ``collapsible``
    is its Qt widget; ``form`` the magicgui container of its magicgui widgets."""

    def __init__(self, title: str, items, expanded: bool = True):
        self.title = title
        items = list(items)
        self.form = Container(widgets=[w for w in items if not isinstance(w, QWidget)],
                              labels=True)
        self.form.margins = (0, 0, 0, 0)
        compact(self.form)
        layout = self.form.native.layout()
        for position, item in enumerate(items):
            if isinstance(item, QWidget):
                layout.insertWidget(position, item)
        self.collapsible = QCollapsible(title, collapsedIcon="▶")
        self.collapsible.setObjectName(f"voxseg section {title}")
        self.collapsible.setDuration(0)  # no animation: it would delay tests and Xvfb
        self.collapsible.addWidget(self.form.native)
        if expanded:
            self.collapsible.expand(animate=False)
        else:
            self.collapsible.collapse(animate=False)

    @property
    def expanded(self) -> bool:
        return self.collapsible.isExpanded()

    def expand(self) -> None:
        self.collapsible.expand(animate=False)

    def collapse(self) -> None:
        self.collapsible.collapse(animate=False)

    def reset_choices(self) -> None:
        self.form.reset_choices()


class FittingScroll(QScrollArea):
    """A vertical scroll area whose content is as tall as its wrapped texts need at the width
    shown (a plain QScrollArea gives a wrapped label one line and cuts the rest)."""

    def __init__(self, content: QWidget):
        super().__init__()
        self.setObjectName("voxseg scroll")
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(content)
        self.setMinimumWidth(content.minimumSizeHint().width()
                             + self.verticalScrollBar().sizeHint().width())
        content.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self._fit()
        return False

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def follow(self, labels) -> None:
        """Fit again whenever one of these (wrapped) magicgui labels gets a new text: its
        height for the width shown changes without a layout request reaching the content."""
        for label in labels:
            label.changed.connect(lambda *_: QTimer.singleShot(0, self._fit))

    def _fit(self) -> None:
        layout = self.widget().layout()
        if layout is not None and layout.hasHeightForWidth():
            self.widget().setMinimumHeight(layout.totalHeightForWidth(self.viewport().width()))


def lay_out(widget) -> dict[str, Section]:
    """Lay out the VoxSeg dock ``widget`` (a magicgui container) in a scroll area: the
    sections Data and Training (folded), the run's buttons and report (always shown), then the
    sections Prediction, Paint next, Compare (folded) and Model. Returns the sections by title."""
    form = widget.form
    sections = {
        "Data": Section("Data", [
            form.image_choice, form.channels, form.task, form.labels_choice,
            form.multi_labels, form.target_choice, form.mask_choice, form.new_labels_button,
            widget.training_set.row, form.classes, widget.class_list, form.live,
            form.ground_truth]),
        # Settings whose defaults suit most runs: folded until opened.
        "Training": Section("Training", [
            form.loss, form.focal_gamma, form.boundary_choice, form.weights,
            form.weights_info, form.iterations, form.learning_rate, form.network,
            form.two_stage, form.device, form.preview_every], expanded=False),
        "Prediction": Section("Prediction", [
            form.outputs, form.objects, widget.predict_buttons]),
        "Paint next": Section("Paint next", widget.paint_next.fields),
        "Compare": Section("Compare", widget.compare.fields, expanded=False),
        "Model": Section("Model", [widget.model_buttons, widget.exporter.row,
                                   widget.model_info]),
    }
    run = Container(widgets=[widget.buttons, widget.progress, widget.status,
                             widget.validation], labels=True)
    run.margins = (0, 0, 0, 0)
    compact(run)
    run.native.layout().insertWidget(run.index(widget.status) + 1, widget.curve)
    widget.run_report = run
    content = QWidget()
    content.setObjectName("voxseg form")
    layout = QVBoxLayout(content)
    layout.setContentsMargins(0, 0, 4, 0)
    for part in (sections["Data"].collapsible, sections["Training"].collapsible, run.native,
                 sections["Prediction"].collapsible, sections["Paint next"].collapsible,
                 sections["Compare"].collapsible,
                 sections["Model"].collapsible):
        layout.addWidget(part)
    layout.addStretch(1)
    # napari docks ``widget.native``: the scroll area goes inside it (a magicgui scrollable
    # container's scroll area would be left out of the dock).
    scroll = FittingScroll(content)
    scroll.follow([field for field in (*_all(run), *(w for section in sections.values()
                                                    for w in _all(section.form)))
                   if isinstance(field, Label)])
    widget.native.layout().addWidget(scroll)
    widget.margins = (0, 0, 0, 0)
    return sections
