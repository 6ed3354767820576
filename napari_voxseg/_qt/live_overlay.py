"""Stage 1 following the brush before Train, as ilastik's live update does.

With **Live overlay** ticked, every stroke (a moment after painting pauses) fits stage 1's
quick forest again on the strokes, in a background thread, and shows its prediction in the
'<image> prediction' layer: of the whole volume when it is small (under 2 M voxels: about a
second on the sample), else of the slice in view (and again when the view moves). A run
(Train, Predict) unticks it, so that the model's prediction is not replaced by stage 1's
(training refits stage 1 itself on new strokes); strokes that cannot be fitted yet (one class
painted) show nothing, and the annotation layers are only read.
"""

from __future__ import annotations

import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer

from ..core import VoxSegError, check_image
from ..core.infer import PredictResult
from ..core.live_strokes import stroke_summary
from ..core.two_stage import QUICK_VOXELS, stage_labels
from .results import spatial
from .view import view_region

DELAY_MS = 300  # after the last stroke (or move of the view)
_VIEW_PATCH = (1, 256, 256)  # the slice in view, over at most 1024 x 1024 voxels of it


class LiveOverlay:
    """Refits the quick stage 1 as the user paints and shows it (see the module)."""

    def __init__(self, viewer, form, session, results):
        self.viewer, self.form, self.session, self.results = viewer, form, session, results
        self.shown = 0  # overlays shown (for tests and benchmarks)
        self._worker = None
        self._again = False
        self._image = (None, None)  # (the layer's data, its float32 copy): read once
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(DELAY_MS)
        self._timer.timeout.connect(self.update)
        form.tallies.changed.connect(self.schedule)
        form.live.changed.connect(self._toggled)
        dims = viewer.dims.events
        for event in (dims.current_step, dims.ndisplay):
            event.connect(self._view_moved)

    @property
    def enabled(self) -> bool:
        return bool(self.form.live.value) and self.form.task.value in ("multiclass",
                                                                         "multilabel")

    def _toggled(self, _value=None) -> None:
        if not self.form.live.value:
            self._image = (None, None)
        self.schedule()

    def _view_moved(self, _event=None) -> None:
        image = self.form.image_choice.value
        if image is not None and image.data.size > QUICK_VOXELS:
            self.schedule()

    def schedule(self, *_args) -> None:
        if self.enabled and not self.session.running:
            self._timer.start()

    def update(self) -> None:
        """Fit and show now (in a worker), unless one is at work: then once it ends."""
        if not self.enabled or self.session.running:
            return
        if self._worker is not None:
            self._again = True
            return
        job = self._job()
        if job is None:
            return
        runs = self.session.runs
        # Errors (strokes changed meanwhile, a NaN image...) show nothing: Train tells them.
        self._worker = create_worker(job, _start_thread=False, _ignore_errors=True)
        self._worker.returned.connect(lambda value: self._show(value, runs))
        self._worker.finished.connect(self._done)
        self._worker.start()

    def _job(self):
        """What the worker runs, read on the main thread without a voxel: None when there is
        nothing to fit yet."""
        form, image_layer = self.form, self.form.image_choice.value
        layers, task = form.annotation_layers(), form.task.value
        if image_layer is None or not layers:
            return None
        tallies = [form.tallies.tally(layer) for layer in layers]
        if any(t is None for t in tallies):
            return None
        classes = (int(form.classes.value) or None) if task == "multiclass" else None
        try:
            stroke_summary(task, tallies, [layer.name for layer in layers],
                           num_classes=classes)
        except VoxSegError:
            return None  # said under the class weights already
        shape = tuple(image_layer.data.shape[-3:])
        if any(tuple(layer.data.shape) != shape for layer in layers):
            return None
        region = None
        if int(np.prod(shape)) > QUICK_VOXELS:
            region = view_region(self.viewer, image_layer, _VIEW_PATCH)
            if region is None:
                return None
        data, sources = image_layer.data, [layer.data for layer in layers]
        voxel = tuple(spatial(image_layer)[0])
        cached = self._image

        def job():
            from ..core.stage1 import quick_overlay

            image = cached[1] if cached[0] is data else check_image(data)
            self._image = (data, image)
            strokes = (np.array(sources[0], copy=True) if task == "multiclass" else
                       np.stack([np.asarray(s) for s in sources]))
            probs = quick_overlay(image, strokes, voxel, num_classes=classes, region=region)
            return image_layer, stage_labels(probs, task), task, region

        return job

    def _show(self, value, runs: int) -> None:
        image_layer, labels, task, region = value
        if (not self.enabled or self.session.running or self.session.runs != runs
                or image_layer not in self.viewer.layers):
            return  # a run started since: its result is newer
        self.results.show_result(image_layer, PredictResult(labels=labels, task=task),
                                 region=region)
        self.shown += 1

    def _done(self) -> None:
        self._worker = None
        if self._again:
            self._again = False
            self.schedule()
