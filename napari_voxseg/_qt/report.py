"""What a run shows in the widget: the progress bar, the status line, the loss (and Dice)
curve, the live previews and, at the end, the prediction layers.

:class:`RunReport` listens to the session's ``yielded`` and ``errored`` signals; the widget
hands it the end of each run (:meth:`RunReport.returned`). Layers are changed through the
:class:`~.results.ResultLayers` presenter, on the main thread.
"""

from __future__ import annotations

import time

from magicgui.widgets import Label, ProgressBar
from napari.utils.notifications import (
    Notification,
    notification_manager,
    show_error,
    show_warning,
)

from ..core import (
    PredictEvent,
    PreviewEvent,
    StoppedEarly,
    TrainEvent,
    ValidationEvent,
    VoxSegError,
)
from .curve import LossCurve
from .results import mean_dice


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class RunReport:
    """Shows how the runs of ``session`` go. ``form``: its ground truth (Dice) and image."""

    def __init__(self, viewer, session, results, form):
        self.viewer = viewer
        self.session = session
        self.results = results
        self.form = form
        self.progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self.status = Label(label="Status", value="Paint strokes, then press Train")
        self.validation = Label(label="Held out", value="", visible=False,
                                tooltip="Two stages: Dice of the U-Net and of stage 1 on "
                                        "strokes held out from training; the U-Net's overlay "
                                        "and weights take over only when it is better")
        self.curve = LossCurve()
        self.previews: list[dict] = []  # live previews shown during the last run
        self.last_train_event = None
        session.yielded.connect(self.on_event)
        session.errored.connect(self.on_error)

    def begin(self, *, training: bool = False, continued: bool = False) -> None:
        """A run starts: progress from 0; a training run starts its previews (and, unless
        ``continued``, its curve) afresh."""
        self.progress.value = 0
        if training:
            self.previews = []
            self.validation.value, self.validation.visible = "", False
            if not continued:
                self.curve.clear()

    def say(self, text: str) -> None:
        self.status.value = text

    def error(self, message: str) -> None:
        """A notification, and its start in the status line."""
        self.status.value = message if len(message) < 80 else message[:77] + "..."
        show_error(message)

    def voxel_size_differs(self, message: str, resample=None) -> None:
        """Warn that the image's voxel size is not the model's; ``resample``: the action of a
        'Resample' button on the notification, if offered."""
        actions = [("Resample", resample)] if resample is not None else ()
        notification_manager.dispatch(Notification(f"{message} (tick Resample)",
                                                   severity="warning", actions=actions))
        self.status.value = "voxel size differs from the model's; see the notification"

    # ---- during a run -------------------------------------------------------------------------
    def on_event(self, event) -> None:
        job = self.session.job
        if isinstance(event, TrainEvent):
            self.last_train_event = event
            self.progress.value = int(100 * event.step / event.total)
            done_here = event.step - job.first_step
            left = (event.total - event.step) * event.elapsed / max(1, done_here)
            self.status.value = (f"step {event.step}/{event.total}  loss "
                                 f"{event.smoothed_loss:.4f}  {duration(event.elapsed)}, "
                                 f"~{duration(left)} left")
            self.curve.add_loss(event.step, event.loss, event.smoothed_loss)
        elif isinstance(event, PreviewEvent):
            if not job.abandon.is_set() and job.target in self.viewer.layers:
                self._preview(job.target, event)
                if event.stage == 1 and event.step == 0:
                    self.status.value = (f"stage 1 overlay in {duration(event.elapsed)}; the "
                                         "U-Net refines it in the background")
        elif isinstance(event, ValidationEvent):
            self.validation.visible = True
            self.validation.value = (f"U-Net {event.network[0]:.3f}, stage 1 "
                                     f"{event.stage1[0]:.3f} (Dice, {event.held_out} voxels): "
                                     f"showing {event.chosen}")
        elif isinstance(event, PredictEvent):
            self.progress.value = int(100 * event.done / event.total)
            self.status.value = f"predicting {event.done}/{event.total} tiles"

    def _preview(self, target, event) -> None:
        self.results.show_result(target, event.result, region=event.region)
        entry = {"time": time.perf_counter(), "step": event.step,
                 "annotated": event.annotated, "seconds": event.seconds,
                 "region": event.region, "stage": event.stage}
        dice = self.score(event.result, event.region)
        if dice is not None:
            entry["dice"] = dice
            self.curve.add_dice(event.step, dice)
        self.previews.append(entry)

    def score(self, prediction, region=None) -> float | None:
        """Mean Dice of a multi-class prediction against the ground-truth layer, if chosen."""
        job = self.session.job
        target = job.target if job is not None else self.form.image_choice.value
        shape = None if target is None else tuple(target.data.shape[-3:])
        return mean_dice(prediction, self.form.ground_truth.value, shape, region)

    def on_error(self, exc: Exception) -> None:
        if isinstance(exc, StoppedEarly):  # the user's Stop, heard before a model was made
            self.status.value = str(exc)
            self.progress.value = 0
        elif isinstance(exc, VoxSegError):
            self.error(str(exc))
        else:
            self.error(f"VoxSeg failed ({type(exc).__name__}: {exc}); the layers are "
                       "unchanged, please report this with the steps that led to it")

    # ---- the end of a run ---------------------------------------------------------------------
    def returned(self, job, result, prediction, task: str) -> None:
        """Show what ``job`` returned: the training ``result`` (its notes), and the final
        ``prediction`` (of a model doing ``task``): a PredictResult, or zarr stores by
        output (block-wise), or None when cancelled."""
        if result is not None:
            for note in result.adjustments:
                show_warning(note)
            if result.warning:
                show_warning(f"{result.warning}; kept the best model so far (step "
                             f"{result.best_step})")
        if job is not None and job.abandon.is_set():
            self.status.value = "stopped: a layer it used was removed; the model is kept"
        elif isinstance(prediction, dict):  # block-wise: zarr stores, opened lazily
            if not prediction:
                self.status.value = "prediction cancelled; nothing was written"
            elif job.target in self.viewer.layers:
                self.results.show_stores(job.target, prediction, task)
                self.status.value = f"prediction written to {prediction['labels']}"
        elif prediction is None or prediction.output is None:
            self.status.value = "prediction cancelled"
        elif job.target in self.viewer.layers:
            self._final(job.target, result, prediction)

    def _final(self, target, result, prediction) -> None:
        self.results.show_result(target, prediction)
        self.results.show_extras(target, prediction.probabilities, prediction.uncertainty)
        self.results.show_objects(target, prediction.objects, prediction.object_classes)
        text = ("stopped; " if result is not None and result.stopped else "") + \
            "prediction updated"
        dice = self.score(prediction)
        if dice is not None:
            text += f"; mean Dice vs {self.form.ground_truth.value.name}: {dice:.3f}"
            if result is not None:
                self.curve.add_dice(result.steps, dice)
        self.status.value = text
