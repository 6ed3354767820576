"""The "Paint next" section: the slices (along the axis in view) where new strokes would teach
the model most, from :mod:`napari_voxseg.core.suggest`, as a short list. Clicking a slice moves
the viewer there and shows its most uncertain region faintly (a Labels layer '<image> paint
next', never the annotations). Ranked in a background thread when asked, and, when "After each
prediction" is ticked, after each prediction and at the end of each training run. Not after
the live previews of a run: they cover the region in view and hold labels alone, and ranking
the whole volume beside the training would slow it.
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import CheckBox, Container, PushButton
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from ..core import VoxSegError
from ..core.suggest import Suggestion, suggest, uncertain_region
from ..core.tasks import task_of
from . import inputs
from .results import HINT_KEY, RESULT_KEY, result_metadata, spatial
from .workers import start_worker

AXIS_NAMES = "ZYX"
REGION_SUFFIX = " paint next"


class PaintNext:
    """Its ``suggest_button``, ``auto`` and ``show_region`` boxes, the ``list`` (Qt) and the
    last ``suggestions``; ``go(i)`` moves the viewer to the i-th."""

    def __init__(self, viewer, form, model, say):
        self.viewer, self.form, self.model, self.say = viewer, form, model, say
        self._cancelled = False  # a run started, or the dock closed: the ranking is dropped
        self._quiet = False  # the ranking under way was started by a prediction
        self.suggest_button = PushButton(text="Suggest slices",
                                         tooltip="Rank the slices along the axis in view by "
                                                 "how much strokes there would teach the "
                                                 "model")
        self.auto = CheckBox(text="After each prediction", value=True,
                             tooltip="Rank the slices again whenever a prediction is shown")
        self.show_region = CheckBox(text="Show where", value=True,
                                    tooltip="Show the slice's most uncertain region faintly")
        self.row = Container(widgets=[self.suggest_button, self.auto], layout="horizontal",
                             labels=False)
        self.row.margins = (0, 0, 0, 0)
        self.list = QListWidget()
        self.list.setObjectName("voxseg paint next")
        self.list.setMaximumHeight(110)
        self.list.itemClicked.connect(lambda item: self.go(self.list.row(item)))
        self.suggest_button.changed.connect(self.run)
        self.suggestions: list[Suggestion] = []
        self.uncertainty: np.ndarray | None = None
        self._image_layer = None
        self._worker = None

    @property
    def fields(self) -> list:
        return [self.row, self.show_region, self.list]

    @property
    def running(self) -> bool:
        return self._worker is not None

    def axis_in_view(self, layer) -> int:
        """The layer's spatial axis (0 = Z) the 2D view slices along; Z in a 3D view."""
        dims = self.viewer.dims
        first = dims.ndim - 3  # the viewer axis of the layer's Z (time or channels before)
        sliced = [a - first for a in dims.not_displayed if a >= first]
        if dims.ndisplay != 2 or not sliced:
            return 0
        return sliced[-1]

    def cancel(self) -> None:
        """Drop the ranking under way (a run starts, or the dock closes)."""
        self._cancelled = True

    def after_prediction(self) -> None:
        """A prediction was shown: rank again if asked to and the model has classes."""
        model = self.model()
        if self.auto.value and model is not None and \
                task_of(model.config) != "regression" and not self.running:
            self.run(quiet=True)

    def run(self, _value=None, *, quiet: bool = False) -> None:
        """Rank the slices of the chosen image in a background thread."""
        model = self.model()
        try:
            run = inputs.prediction_run(self.form, model)
            if run.blocks or run.lazy:
                raise VoxSegError("'paint next' works on images in memory; this one is lazy "
                                  "(zarr/dask)")
        except VoxSegError as exc:
            if not quiet:
                self.say(str(exc))
            return
        layer = run.image_layer
        strokes = self._strokes(run.image.shape[-3:], task_of(model.config))
        axis = self.axis_in_view(layer)
        self.suggest_button.enabled = False
        self._cancelled = False
        self._quiet = quiet  # after a prediction: the list changes, the status line stays
        if not quiet:
            self.say(f"ranking the slices of {layer.name} along {AXIS_NAMES[axis]}...")
        self._worker = start_worker(
            suggest, model, run.image, strokes, axis=axis, top=5, voxel_size=run.voxel_size,
            resample=run.resample, should_stop=lambda: self._cancelled,
            returned=lambda result: self._show(layer, result), errored=self._failed,
            finished=self._done)

    def _failed(self, exc) -> None:
        if not self._cancelled and not self._quiet:
            self.say(f"could not rank the slices: {exc or type(exc).__name__}")

    def _strokes(self, shape, task: str) -> np.ndarray | None:
        """A copy of the strokes of the image's shape (multi-label: one per class), or None."""
        layers = (list(self.form.multi_labels.value or []) if task == "multilabel"
                  else [self.form.labels_choice.value])
        data = [np.asarray(layer.data) for layer in layers if layer is not None
                and tuple(layer.data.shape) == tuple(shape)]
        if not data:
            return None
        return np.stack(data) if task == "multilabel" else data[0].copy()

    def _done(self) -> None:
        self.suggest_button.enabled = True
        self._worker = None

    def _show(self, layer, result) -> None:
        if result is None or self._cancelled:
            return
        self._image_layer = layer
        self.suggestions, self.uncertainty = result.suggestions, result.uncertainty
        self.list.clear()
        for s in self.suggestions:
            parts = [f"uncertainty {s.uncertainty:.2f}"]
            if s.disagreement is not None:
                parts.append(f"stages disagree {s.disagreement:.2f}")
            if s.nearest_painted is not None:
                parts.append(f"{s.nearest_painted} slices from a painted one")
            item = QListWidgetItem(f"{AXIS_NAMES[s.axis]} slice {s.slice}   (score "
                                   f"{s.score:.2f})")
            item.setToolTip(", ".join(parts))
            self.list.addItem(item)
        if self._quiet:
            return
        if not self.suggestions:
            self.say("paint next: no slice to suggest (every slice is painted, or the model "
                     "has no doubt anywhere)")
            return
        painted = ", ".join(map(str, result.painted)) or "none"
        self.say("paint next: " + ", ".join(f"slice {s.slice}" for s in self.suggestions)
                 + f" (painted: {painted}); click one to go there")

    def go(self, index: int) -> None:
        """Move the viewer to the ``index``-th suggested slice (and show where it is unsure)."""
        if not 0 <= index < len(self.suggestions) or self._image_layer is None:
            return
        s, layer = self.suggestions[index], self._image_layer
        if layer not in self.viewer.layers:
            self.say(f"{layer.name} is no longer open; rank the slices again")
            return
        axis = layer.ndim - 3 + s.axis  # the layer's axis (time or channels may come first)
        index_vector = [0.0] * layer.ndim
        index_vector[axis] = float(s.slice)
        point = float(layer.data_to_world(index_vector)[axis])
        self.viewer.dims.set_point(self.viewer.dims.ndim - layer.ndim + axis, point)
        self.list.setCurrentRow(index)
        if self.show_region.value and self.uncertainty is not None:
            self._show_region(layer, uncertain_region(self.uncertainty, s))

    def _show_region(self, layer, region: np.ndarray) -> None:
        """Show ``region`` faintly as '<image> paint next': a layer voxseg made (replaced in
        place), never the user's; selection stays with the brush's layer."""
        name = layer.name + REGION_SUFFIX
        data = region.astype(np.uint8)
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if existing is not None and isinstance(existing, napari.layers.Labels) and \
                existing.metadata.get(RESULT_KEY) and existing.data.shape == data.shape:
            existing.data = data
            return
        if existing is not None:
            name = f"{name} ({len(self.viewer.layers)})"  # never over a layer of the user's
        scale, translate = spatial(layer)
        active = self.viewer.layers.selection.active
        shown = self.viewer.add_labels(data, name=name, opacity=0.35, scale=scale,
                                       translate=translate,
                                       metadata={**result_metadata(layer), HINT_KEY: True})
        shown.editable = False
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
