"""**Predict all open images**: the model applied to every image layer in the viewer, one after
the other, each through the same path as **Predict with model** (in memory, or block by block
for a lazy image), its result shown as soon as it is done.

The images are queued; each is made the chosen image in turn and predicted; when its run has
finished the next starts. An image the model cannot take (another channel count, a 2D layer) is
reported and passed over. **Stop** ends the current one and empties the queue. The image chosen
before is chosen again at the end.
"""

from __future__ import annotations

import napari
from qtpy.QtCore import QTimer

from ..core.card import image_channels
from .results import RESULT_KEY


def can_be_predicted(layer) -> bool:
    """An image layer a user opened (not one of voxseg's results) with Z, Y and X axes."""
    return (isinstance(layer, napari.layers.Image) and not layer.rgb
            and layer.ndim >= 3 and not layer.metadata.get(RESULT_KEY))


class PredictAll:
    """The queue behind the button; ``widget`` is the VoxSegWidget (its form, model,
    session, ``predict`` and ``report``)."""

    def __init__(self, widget):
        self.widget = widget
        self.queue: list = []
        self.chosen_before = None
        self.done = 0
        widget.session.finished.connect(self._next_soon)

    @property
    def active(self) -> bool:
        return bool(self.queue) or self.chosen_before is not None

    def start(self) -> None:
        widget = self.widget
        if widget.running:
            return
        model = widget.model
        if model is None:
            widget.report.error("no model yet: train one or press 'Load model...'")
            return
        if image_channels(model.config) > 1:
            widget.report.error("this model takes several channels; choose each image and its "
                                "channels and press 'Predict with model'")
            return
        layers = [layer for layer in widget.viewer.layers if can_be_predicted(layer)]
        if not layers:
            widget.report.error("no image layer to predict: open volumes first")
            return
        self.queue, self.done = layers, 0
        self.chosen_before = widget.form.image_choice.value
        self._next()

    def stop(self) -> None:
        self.queue = []

    def _next_soon(self) -> None:
        if self.active:  # after the finished signal's other handlers have run
            QTimer.singleShot(0, self._next)

    def _next(self) -> None:
        widget = self.widget
        if widget.running:
            return
        while self.queue:
            layer = self.queue.pop(0)
            if layer not in widget.viewer.layers:
                continue
            widget.form.image_choice.value = layer
            widget.predict()
            if widget.running:
                self.done += 1
                widget.report.say(f"predicting {layer.name} ({self.done} of "
                                  f"{self.done + len(self.queue)})...")
                return
        self._finish()

    def _finish(self) -> None:
        before, self.chosen_before = self.chosen_before, None
        if self.done > 1:
            self.widget.report.say(f"predicted {self.done} images")
        if before is not None and before in self.widget.viewer.layers:
            self.widget.form.image_choice.value = before
