"""The training set: more (image, annotations) pairs from the open layers, trained on together
with the chosen pair (the core lays them side by side: :mod:`..core.volumes`).

**+ pair** adds the chosen image and annotations; **Clear** empties the set. Train then
learns from the chosen pair and every pair of the set, each with its own voxel size (the
layer's scale). Strokes painted on any pair while it trains join in (one
:class:`~.painting.LiveStrokes` follows every pair's layer); the live previews and the final
prediction cover the chosen image.
"""

from __future__ import annotations

from magicgui.widgets import Container, Label, PushButton
from napari.utils.notifications import show_warning

from ..core.errors import VoxSegError
from .inputs import image_reader
from .results import spatial


class TrainingSet:
    """The pairs, and the row that shows and edits them (``row``)."""

    def __init__(self, viewer, form):
        self.viewer, self.form = viewer, form
        self.pairs: list[tuple] = []
        self.summary = Label(value="the chosen pair only")
        self.add_button = PushButton(text="+ pair", tooltip="Add the chosen image and "
                                     "annotations to the training set")
        self.clear_button = PushButton(text="Clear", tooltip="Train on the chosen pair only")
        self.row = Container(widgets=[self.summary, self.add_button, self.clear_button],
                             layout="horizontal", labels=False, label="Training set")
        self.row.margins = (0, 0, 0, 0)
        self.add_button.changed.connect(self.add)
        self.clear_button.changed.connect(self.clear)
        viewer.layers.events.removed.connect(self._forget_removed)

    def add(self) -> None:
        image, labels = self.form.image_choice.value, self.form.labels_choice.value
        if image is None or labels is None:
            show_warning("choose an image and its annotations first, then press + pair")
            return
        if (image, labels) not in self.pairs:
            self.pairs.append((image, labels))
        self._show()

    def clear(self) -> None:
        self.pairs = []
        self._show()

    def _forget_removed(self, event) -> None:
        kept = [p for p in self.pairs if all(layer is not event.value for layer in p)]
        if len(kept) != len(self.pairs):
            self.pairs = kept
            self._show()

    def _show(self) -> None:
        names = [image.name for image, _ in self.pairs]
        self.summary.value = (f"{len(names)} pair(s): {', '.join(names)}" if names else
                              "the chosen pair only")

    def others(self, image_layer, labels_layer) -> list:
        """The pairs besides the chosen one: ``(image read later, labels layer, voxel size)``
        each; one line when they cannot train with it."""
        others = [p for p in self.pairs if p != (image_layer, labels_layer)]
        if not others:
            return []
        form = self.form
        if form.task.value != "multiclass":
            raise VoxSegError("a training set of several pairs is for multi-class tasks; "
                              "press Clear, or set Task to multi-class")
        if form.channels.value:
            raise VoxSegError("a training set of several pairs takes one-channel images; "
                              "press Clear, or empty 'More channels'")
        read = []
        for image, labels in others:
            if image not in self.viewer.layers or labels not in self.viewer.layers:
                continue
            if tuple(labels.data.shape) != tuple(image.data.shape[-3:]):
                raise VoxSegError(f"the pair {image.name} / {labels.name}: the annotations "
                                  f"{tuple(labels.data.shape)} are not the image's shape "
                                  f"{tuple(image.data.shape[-3:])}; press Clear and add "
                                  "pairs painted on their own image")
            later, _ = image_reader(form, image, alone=True)
            read.append((later, labels, tuple(spatial(image)[0])))
        return read

