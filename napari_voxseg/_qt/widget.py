"""The VoxSeg dock widget: a form, the buttons that run it, and the model.

The widget wires together parts with one job each:

- :mod:`.form`: the fields, which follow the task (each also an attribute of the widget);
- :mod:`.layout`: the sections (Data, Training, Prediction, Paint next, Compare, Model) they
  fold into;
- :mod:`.classes`: the class list (colours, names, "+ class");
- :mod:`.compare`: the Compare section (scores of a prediction against a ground truth);
- :mod:`.paint_next`: the Paint next section (the slices to annotate next);
- :mod:`.inputs`: reading the form into a checked run (TrainConfig and copies of the layers);
- :mod:`.session`: the background worker and what it shares with the main thread;
- :mod:`.report`: what a run shows (progress, status, loss curve, previews, final layers);
- :mod:`.results`: the layers that show predictions, probabilities and uncertainty;
- :mod:`.view`: the region in view, which live previews predict;
- :mod:`.model_files`: Save model... and Load model... (with :mod:`.dialogs`);
- :mod:`.export_model`: Export model... (TorchScript, ONNX, bioimage.io)

and keeps the model (trained or loaded). Layers are read on the main
thread (copies go to the worker) and changed only in the session's handlers, on the main
thread. The data of the user's annotation layers is never written to (the class list
stores class names in their metadata).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import threading

import napari
from magicgui.widgets import Container, Label, PushButton

from ..core import VoxSegError
from ..core.infer import voxel_mismatch
from ..core.models import describe_network
from ..core.tasks import task_of
from . import inputs
from .classes import ClassList
from .compare import Compare
from .export_model import ModelExport
from .form import Form
from .layout import lay_out
from .live_overlay import LiveOverlay
from .model_files import ModelFiles
from .paint_next import PaintNext
from .predict_all import PredictAll
from .report import RunReport
from .results import ResultLayers, class_names
from .series import is_series, show_series_prediction
from .session import Job, Session, predict_blocks_job, predict_job, scratch_store, train_job
from .training_set import TrainingSet
from .view import view_region

__all__ = ["VoxSegWidget", "view_region"]


def preload_stage1() -> None:
    """Import scikit-learn's forest (about 1.5 s) in the background as the widget opens, so
    that the first overlay after Train is not kept waiting by it."""
    def load():
        with contextlib.suppress(ImportError):
            importlib.import_module("sklearn.ensemble")

    threading.Thread(target=load, name="voxseg-preload", daemon=True).start()


class VoxSegWidget(ModelFiles, Container):
    """Pick an image, paint strokes, train, predict, save and load models.

    Its parts: ``form`` (whose fields are also attributes: ``image_choice``, ``task``...),
    ``session`` (``running``, the current ``job``, and the ``yielded`` signal: every event of
    a run), ``report`` (``progress``, ``status``, ``curve``, ``previews``: the live previews of
    the last run, ``last_train_event``) and ``results`` (the result layers)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self._model = None  # the trained or loaded network (torch.nn.Module with .config)
        self._resume = None  # where the last stopped run was: Continue goes on from there
        self.form = Form(napari_viewer)
        for name in (*Form.FIELDS, *Form.OUTPUTS):
            setattr(self, name, getattr(self.form, name))
        self.session = Session(napari_viewer)
        self.results = ResultLayers(napari_viewer, self._protected, self._class_names)
        self.report = RunReport(napari_viewer, self.session, self.results, self.form)
        self.live_overlay = LiveOverlay(napari_viewer, self.form, self.session, self.results)
        self.progress, self.status, self.curve = (self.report.progress, self.report.status,
                                                  self.report.curve)
        self._build_controls()
        self.predict_all = PredictAll(self)
        self.training_set = self.form.training_set = TrainingSet(napari_viewer, self.form)
        self.class_list = self.form.class_list = ClassList(self.form, self._model_class_names)
        self.compare = Compare(napari_viewer, self.report.say)
        self.paint_next = PaintNext(napari_viewer, self.form, lambda: self._model,
                                    self.report.say)
        self.exporter = ModelExport(napari_viewer, self.form, lambda: self._model,
                                    self.report.say)
        self.validation = self.report.validation
        self.sections = lay_out(self)
        self._connect()
        self._layers_changed()
        self.form.follow_task()
        preload_stage1()

    def reset_choices(self, *_args) -> None:
        """Offer the layers there are in every choice of every section (napari calls this
        when layers are added or removed)."""
        for section in self.sections.values():
            section.reset_choices()

    def _build_controls(self) -> None:
        self.train_button = PushButton(text="Train", tooltip="Train a new network on the strokes")
        self.stop_button = PushButton(text="Stop", enabled=False,
                                      tooltip="Stop after this step; keep the best model")
        self.continue_button = PushButton(text="Continue", enabled=False,
                                          tooltip="Go on with the stopped run where it stopped")
        self.fine_tune_button = PushButton(text="Fine-tune", enabled=False,
                                           tooltip="Train the current model further on the "
                                                   "strokes, at a lower learning rate")
        self.buttons = Container(widgets=[self.train_button, self.stop_button,
                                          self.continue_button, self.fine_tune_button],
                                 layout="horizontal", labels=False)
        self.buttons.margins = (0, 0, 0, 0)
        self.predict_button = PushButton(text="Predict with model",
                                         tooltip="Label the chosen image with the model; a "
                                                 "lazy (dask/zarr) image is done block by "
                                                 "block into a zarr store")
        self.predict_all_button = PushButton(
            text="Predict all open images",
            tooltip="Label every image layer with the model, one after the other")
        self.predict_buttons = Container(widgets=[self.predict_button, self.predict_all_button],
                                         layout="horizontal", labels=False)
        self.predict_buttons.margins = (0, 0, 0, 0)
        self.save_button = PushButton(text="Save model...")
        self.load_button = PushButton(text="Load model...")
        self.model_buttons = Container(widgets=[self.save_button, self.load_button],
                                       layout="horizontal", labels=False)
        self.model_buttons.margins = (0, 0, 0, 0)
        self.model_info = Label(label="Model", value="none")

    def _connect(self) -> None:
        for button, action in ((self.new_labels_button, self.new_annotations),
                               (self.train_button, self.train), (self.stop_button, self.stop),
                               (self.continue_button, self.continue_training),
                               (self.fine_tune_button, self.fine_tune),
                               (self.predict_button, self.predict),
                               (self.predict_all_button, self.predict_all.start),
                               (self.save_button, self._save_clicked),
                               (self.load_button, self._load_clicked)):
            button.changed.connect(action)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._layers_changed)
        self.session.returned.connect(self._on_returned)
        self.session.finished.connect(self._refresh_buttons)
        # Closing the window asks napari's task manager to cancel running tasks first.
        self.native.destroyed.connect(self.session.abandon_quietly)
        self.native.destroyed.connect(self.paint_next.cancel)

    def _layers_changed(self, _event=None) -> None:
        """Offer the layers there are; default the annotations and the ground truth."""
        with self.form.choosing(), self.compare.choosing():
            self.reset_choices()
        self.form.choose_defaults()
        self.compare.choose_defaults()

    # ---- state ----------------------------------------------------------------------------
    @property
    def model(self):
        """The trained or loaded network (torch.nn.Module with .config), or None."""
        return self._model

    @model.setter
    def model(self, model) -> None:
        self._model = model
        self._refresh_buttons()
        self.class_list.refresh()  # unnamed classes take the model's names

    @property
    def running(self) -> bool:
        return self.session.running

    @property
    def previews(self) -> list[dict]:
        """The live previews of the last training run (step, region, annotated, dice...)."""
        return self.report.previews

    @property
    def last_train_event(self):
        """The last TrainEvent of the last training run."""
        return self.report.last_train_event

    def _refresh_buttons(self) -> None:
        running, job = self.session.running, self.session.job
        self.train_button.enabled = self.load_button.enabled = not running
        self.fine_tune_button.enabled = not running and self._model is not None
        self.continue_button.enabled = not running and self._resume is not None
        self.save_button.enabled = not running
        self.stop_button.enabled = running
        # While training, Predict asks for a whole-volume preview.
        self.predict_button.enabled = not running or (job is not None and job.kind == "train")
        self.predict_all_button.enabled = not running

    def _notify_error(self, message: str) -> None:
        self.report.error(message)

    def update_weights_info(self) -> str:
        """Compute the class weights from the current strokes and show them (before training)."""
        return self.form.update_weights_info()

    # ---- actions --------------------------------------------------------------------------
    def new_annotations(self) -> napari.layers.Labels | None:
        """Add an empty Labels layer with the image's spatial shape, scale and translation."""
        try:
            return self.form.new_annotations()
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return None

    def train(self, *, fine_tune: bool = False) -> None:
        """Train on the chosen image and annotations in a background worker: a new network,
        or (``fine_tune``) the current model further, at a lower learning rate."""
        if not self.running:
            self._start_training(inputs.training_run, self.form, self._model,
                                 fine_tune=fine_tune)

    def fine_tune(self) -> None:
        """Train the current (trained or loaded) model further on the strokes."""
        self.train(fine_tune=True)

    def continue_training(self) -> None:
        """Go on with the last stopped run from where it stopped, with the current strokes."""
        if not self.running:
            self._start_training(inputs.continued_run, self.form, self._model, self._resume)

    def _start_training(self, read, *args, **kwargs) -> None:
        """Read the run with ``read(*args, **kwargs)`` (a refusal is a notification) and start
        it."""
        try:
            run = read(*args, **kwargs)
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return
        job = Job("train", run.image_layer, run.layers, patch=run.patch,
                  class_names=run.inputs.names, first_step=run.first_step,
                  live=run.inputs.live)
        self._start(job, train_job, job, run.image, run.inputs.labels, run.config,
                    run.voxel_size, total=run.config.iterations,
                    preview_every=float(self.preview_every.value) or math.inf,
                    outputs={**inputs.extra_outputs(self.form, run.config.task),
                             "objects": inputs.objects_wish(self.form, run.voxel_size)},
                    **run.inputs.kwargs)

    def predict(self) -> None:
        """Predict the chosen image with the current model, in a background worker. While
        training, predict the whole volume with the network as it is, at the next step."""
        if self.running:
            if self.session.job.kind == "train":
                self.session.preview_whole_volume()
                self.report.say("predicting the whole volume at the next step...")
            return
        layer = self.form.image_choice.value
        if is_series(layer) and self._model is not None:  # lazily, frame by frame
            try:
                show_series_prediction(self.results, layer, self._model)
            except VoxSegError as exc:
                self._notify_error(str(exc))
                return
            self.report.say(f"{layer.name}: each frame is predicted when shown")
            return
        try:
            run = inputs.prediction_run(self.form, self._model)
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return
        job = Job("predict", run.image_layer, run.layers)
        if run.blocks:
            self._warn_voxel_size(run.voxel_size, offer_resample=False)
            self._start(job, predict_blocks_job, job, self._model, run.image,
                        scratch_store(run.image_layer.name), run.voxel_size, **run.outputs)
            return
        if not run.resample:
            self._warn_voxel_size(run.voxel_size, offer_resample=not run.lazy)
        self._start(job, predict_job, job, self._model, run.image, voxel_size=run.voxel_size,
                    resample=run.resample, **run.outputs)

    def _warn_voxel_size(self, voxel, *, offer_resample: bool) -> None:
        """Tell the user when the image's voxel size is not the model's, with a button that
        predicts again resampled (``offer_resample``: for images in memory)."""
        message = voxel_mismatch(self._model, voxel)
        if message:
            self.report.voxel_size_differs(
                message, self._resample_and_predict if offer_resample else None)

    def _resample_and_predict(self, _notification=None) -> None:
        self.resample.value = True
        if not self.running:
            self.predict()

    def stop(self) -> None:
        """Stop training after the current step; the best model so far is kept and applied."""
        self.predict_all.stop()
        self.paint_next.cancel()
        if self.running:
            self.session.stop()
            self.report.say("stopping...")

    def _start(self, job: Job, function, *args, total: int = 0, **kwargs) -> None:
        self.live.value = False  # the run's result is not to be replaced by stage 1's
        self.paint_next.cancel()  # the run needs the CPU (or GPU), and changes what is ranked
        self.report.begin(training=job.kind == "train", continued=job.first_step > 0)
        self.session.start(job, function, *args, total=total, **kwargs)
        self._refresh_buttons()

    def _on_returned(self, value) -> None:
        """A run ended (main thread): keep what training learned, then show the result."""
        result, prediction = value
        if result is not None:
            self._resume = result.resume
            self.model = result.model
            kept = result.model.config["training"].get("validation", {}).get("kept")
            self.model_info.value = (f"trained {result.steps} steps, best loss "
                                     f"{result.best_loss:.4f}; "
                                     f"{describe_network(result.model.config)}"
                                     + (f"; kept {kept} (better on held-out strokes)"
                                        if kept else ""))
        task = task_of(self._model.config) if self._model is not None else None
        job = self.session.job
        self.report.returned(job, result, prediction, task)
        if job is not None and job.kind in ("predict", "train") and prediction is not None \
                and not getattr(prediction, "cancelled", False):
            self.paint_next.after_prediction()  # a new prediction, or a new model

    # ---- result layers (see results.ResultLayers) -----------------------------------------
    def show_result(self, image_layer, prediction, region=None) -> list:
        """Show a PredictResult as '<image> prediction' layer(s); see ResultLayers."""
        return self.results.show_result(image_layer, prediction, region=region)

    def show_extras(self, image_layer, probabilities, uncertainty) -> list:
        """Image layers '<image> probability: <class>' and '<image> uncertainty' (in place)."""
        return self.results.show_extras(image_layer, probabilities, uncertainty)

    def show_stores(self, image_layer, stores: dict) -> list:
        """Show the zarr stores of a block-wise prediction as lazy (dask) layers."""
        task = task_of(self._model.config)
        return self.results.show_stores(image_layer, stores, task)

    def show_prediction(self, image_layer, data, *, kind: str = "labels", suffix: str = "",
                        region=None):
        """Show ``data`` as the layer '<image> prediction<suffix>'; see ResultLayers."""
        return self.results.show_prediction(image_layer, data, kind=kind, suffix=suffix,
                                            region=region)

    def _model_class_names(self) -> list[str]:
        """The loaded or trained multi-class model's class names (none for other tasks)."""
        if self._model is None or task_of(self._model.config) != "multiclass":
            return []
        return class_names(self._model.config)

    def _class_names(self, count: int | None = None) -> list[str]:
        """Names for ``count`` outputs (default: the model's), or the running job's."""
        job = self.session.job
        config = self._model.config if self._model is not None else {}
        # A training run's names are the class list's as it started (the model's may be older).
        training = list(job.class_names or []) if job is not None and job.kind == "train" else []
        if count is None:
            count = config["architecture"]["num_classes"] if config else len(training)
        if len(training) >= count:
            return training[:count]
        return class_names(config, count, None if job is None else (job.class_names or []))

    def _protected(self, layer) -> bool:
        """Whether ``layer`` is one the user paints or compares with (so results never go in)."""
        job = self.session.job
        chosen = self.form.chosen_layers() + (job.layers if job is not None else [])
        return any(layer is other for other in chosen)
