"""One background run at a time: the worker, what it shares with the main thread, its end.

A :class:`Session` starts a napari worker on one of the job bodies below and reports, on the
main thread, through its signals: ``yielded(event)`` for every core event, ``returned(value)``,
``errored(exception)`` and ``finished()``. It never adds or changes a layer. While a training
runs it also feeds the worker: strokes painted meanwhile (each stroke's changes, which the
worker's own copy of the annotations takes every few steps: :class:`~.painting.LiveStrokes`)
and the region in view (for previews). The worker reads the image and the strokes as it
starts (:class:`~.inputs.Later`), so Train never copies a volume on the main thread.
Removing a layer the run reads, or closing the window, stops the worker without a result.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_warning
from psygnal import Signal
from qtpy.QtCore import QTimer

from ..core import TrainEvent, iter_predict, iter_train
from ..core.blocks import iter_predict_blocks
from ..core.errors import VoxSegError
from .inputs import objects_request, resolve
from .view import camera, view_region


class Job:
    """What one worker run shares with the main thread."""

    def __init__(self, kind: str, target, layers, *, patch=None, class_names=None,
                 first_step: int = 0, live=None):
        self.kind = kind  # "train" or "predict"
        self.target = target  # the image layer whose prediction is shown
        self.layers = list(layers)  # every layer the run reads; removing one stops it
        self.patch = patch  # the training patch (the previews' tile)
        self.class_names = class_names  # the run's class names (for its previews)
        self.first_step = first_step  # the step a continued run starts from
        self.live = live  # LiveStrokes: the strokes painted during the run reach the worker
        self.stop = threading.Event()  # stop training, keep the best model, predict
        self.abandon = threading.Event()  # stop everything, show nothing (closing, removal)
        self.done = threading.Event()  # set by the worker as it ends
        self.region = None  # main thread -> worker: the block in view (three slices)
        self.full_preview = False  # main thread -> worker: predict everything at next step
        self.closing = False  # the window is closing: say nothing, touch nothing
        self.bar = None  # napari's progress indicator
        self.task_id = None  # napari's task status (asks before closing the window)

    def preview_region(self):
        if self.full_preview:
            self.full_preview = False
            return (slice(None),) * 3
        return self.region

    def preview_now(self) -> bool:
        return self.full_preview


# ---- job bodies (worker thread) -------------------------------------------------------------
def train_job(job: Job, image, labels, config, voxel_size, model=None, outputs=None,
              **kwargs):
    """Train (with live previews), then predict the whole volume. Yields core events;
    returns ``(TrainResult, PredictResult | None)``."""
    outputs = outputs or {}
    pairs = kwargs.pop("pairs", None)  # the training set's other pairs
    try:  # read here, in the worker: the image as float32, the strokes (first take)
        image, labels = resolve(image), resolve(labels)
        kwargs = {key: resolve(value) for key, value in kwargs.items()}
        voxels = voxel_size
        if pairs:  # several volumes: each pair's strokes (a list, the chosen pair's first)
            image = [(image, labels[0]), *((resolve(i), s) for (i, _), s in zip(pairs,
                                                                               labels[1:]))]
            labels, voxels = None, [voxel_size, *(v for _, v in pairs)]
        result = yield from iter_train(
            image, labels, config, model=model, voxel_size=voxels,
            should_stop=job.stop.is_set, get_labels=None if job.live is None else job.live.take,
            preview_region=job.preview_region, preview_now=job.preview_now, **kwargs)
        image = image[0][0] if pairs else image
        if job.abandon.is_set():
            return result, None
        wish = outputs.pop("objects", None)
        prediction = yield from iter_predict(result.model, image,
                                             should_stop=job.abandon.is_set, **outputs)
        try:  # an objects error never loses the trained model
            prediction = with_objects(prediction, objects_request(wish, result.model.config))
        except (VoxSegError, MemoryError) as exc:
            result.adjustments.append(f"no objects: {exc or 'out of memory'}")
        return result, prediction
    finally:
        job.done.set()


def with_objects(prediction, objects: dict | None):
    """The prediction with its objects (``objects``: what :func:`.inputs.objects_request`
    asked for), computed here in the worker."""
    if objects and prediction is not None and prediction.labels is not None:
        from ..core.objects import make_objects

        prediction.objects = make_objects(prediction.labels, **objects)
        prediction.object_classes = tuple(objects["classes"])
    return prediction


def predict_job(job: Job, model, image, objects=None, **kwargs):
    """Predict an image in memory; returns ``(None, PredictResult)``."""
    try:
        prediction = yield from iter_predict(model, image, should_stop=job.stop.is_set,
                                             **kwargs)
        return None, with_objects(prediction, objects)
    finally:
        job.done.set()


def predict_blocks_job(job: Job, model, data, out: Path, voxel_size, *, probabilities,
                       uncertainty, objects=None):
    """Block by block into zarr stores; returns (None, {output: path}) or (None, {})."""
    try:
        stem = str(out)[: -len(".zarr")]
        written = yield from iter_predict_blocks(
            model, data, out, voxel_size=voxel_size, should_stop=job.stop.is_set,
            probabilities=f"{stem}-probabilities.zarr" if probabilities else None,
            uncertainty=f"{stem}-uncertainty.zarr" if uncertainty else None)
        if objects and written:
            from ..core.objects import write_objects

            written["objects"] = Path(f"{stem}-objects.zarr")
            write_objects(written["labels"], written["objects"], overwrite=True, **objects)
        return None, written
    finally:
        job.done.set()


def scratch_store(name: str) -> Path:
    """Where a block-wise prediction of a lazy image is written: a new .zarr folder in the
    temporary directory (napari then reads it lazily)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60] or "image"
    folder = Path(tempfile.gettempdir()) / "napari-voxseg"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.zarr"


# ---- the session (main thread) --------------------------------------------------------------
class Session:
    """Runs one job at a time in a napari worker and reports through its signals."""

    yielded = Signal(object)  # every event the worker yields
    returned = Signal(object)  # the job's return value (the job is still current)
    errored = Signal(object)  # the exception that ended the job
    finished = Signal()  # the job is over and cleared: ``running`` is False again

    def __init__(self, viewer):
        self.viewer = viewer
        self._worker = None
        self._job: Job | None = None
        self.runs = 0  # runs started so far (a result computed before one is older)
        viewer.layers.events.removed.connect(self._layer_removed)
        dims, cam = viewer.dims.events, camera(viewer).events
        for event in (dims.current_step, dims.ndisplay, dims.order, cam.center, cam.zoom):
            event.connect(self.follow_view)

    @property
    def running(self) -> bool:
        """Whether a worker runs (from start until ``finished``)."""
        return self._worker is not None

    @property
    def job(self) -> Job | None:
        """The current run's shared state, None between runs (read-only)."""
        return self._job

    def start(self, job: Job, function, *args, total: int = 0, **kwargs) -> None:
        """Run ``function(*args, **kwargs)`` (a generator) in a worker as ``job``. ``total``:
        the training steps, shown in napari's progress indicator."""
        self._job = job
        self.runs += 1
        if total:  # napari's own progress indicator (bottom right), for training steps
            job.bar = progress(total=total, desc="VoxSeg training")
            job.bar.update(job.first_step)
        register = getattr(self.viewer.window, "_register_task_status", None)
        if register is not None:  # napari asks before closing the window, then cancels us
            from napari.utils.task_status import Status

            job.task_id = register("napari-voxseg", Status.BUSY, job.kind,
                                   cancel_callback=self.abandon_quietly)
        if job.live is not None:  # before the worker's first read of the strokes
            job.live.connect(self.viewer)
        self._worker = create_worker(function, *args, **kwargs, _start_thread=False,
                                     _ignore_errors=True, _connect=self._handlers())
        self._worker.start()
        self.follow_view()

    def _handlers(self) -> dict:
        return {"yielded": self._on_yielded, "returned": self._on_returned,
                "errored": self._on_errored, "finished": self._on_finished}

    def stop(self) -> bool:
        """Ask the run to stop after this step (training keeps its best model)."""
        if self._job is None:
            return False
        self._job.stop.set()
        return True

    def preview_whole_volume(self) -> None:
        """Training: predict the whole volume with the network as it is, at the next step."""
        if self._job is not None:
            self._job.full_preview = True

    def abandon(self) -> None:
        """Stop the run and show nothing from it (its layers or the viewer are going)."""
        if self._job is not None:
            self._job.abandon.set()
            self._job.stop.set()

    def abandon_quietly(self, *_args) -> bool:
        """The window is closing: stop the worker, wait for it, and report nothing more (the
        widgets are about to go). Returns True (napari's task cancel callback)."""
        job, worker = self._job, self._worker
        if job is None or worker is None:
            return True
        job.closing = True
        self.abandon()
        for signal, handler in self._handlers().items():
            try:
                getattr(worker, signal).disconnect(handler)
            except (TypeError, RuntimeError):
                pass
        job.done.wait(timeout=60)  # one training step or one batch of tiles
        self._end(job)
        return True

    # ---- while training: strokes in, region in view, layers removed ------------------------
    def follow_view(self, _event=None) -> None:
        """Tell a training run the region in view (for its next preview)."""
        job = self._job
        if job is not None and job.kind == "train" and job.target in self.viewer.layers:
            job.region = view_region(self.viewer, job.target, job.patch)

    def _layer_removed(self, event) -> None:
        job = self._job
        if job is None or job.done.is_set():
            return
        if any(layer is event.value for layer in job.layers):
            self.abandon()
            message = (f"VoxSeg stopped: the layer '{event.value.name}' it was using was "
                       "removed; nothing was changed")
            # Told a moment later, unless it is the whole viewer closing (all layers go first).
            QTimer.singleShot(0, lambda: None if job.closing else show_warning(message))

    # ---- worker handlers (main thread) -----------------------------------------------------
    def _on_yielded(self, event) -> None:
        job = self._job
        if job is None:
            return
        if isinstance(event, TrainEvent) and job.bar is not None:
            job.bar.update(event.step - job.bar.n)
        self.yielded.emit(event)

    def _on_returned(self, value) -> None:
        self.returned.emit(value)

    def _on_errored(self, exc) -> None:
        self.errored.emit(exc)

    def _on_finished(self) -> None:
        if self._job is not None:
            self._end(self._job)
        self._worker = None
        self.finished.emit()

    def _end(self, job: Job) -> None:
        if job.live is not None:
            job.live.close()
        if job.bar is not None:
            job.bar.close()
            job.bar = None
        update = getattr(self.viewer.window, "_update_task_status", None)
        if job.task_id is not None and update is not None:
            from napari.utils.task_status import Status

            update(job.task_id, Status.CANCELLED if job.abandon.is_set() else Status.COMPLETED)
        if self._job is job:
            self._job = None
        self._worker = None
