"""The VoxSeg dock widget: a form that builds a TrainConfig and runs the core in a worker.

Layers are read on the main thread (copies go to the worker) and changed only in the worker's
``yielded`` and ``returned`` handlers, on the main thread. The user's annotation layers are
never written to. While training runs:

- strokes painted meanwhile are copied (on the main thread, 300 ms after painting pauses) into
  a mailbox that the worker empties every few steps;
- the region in view is kept up to date on the main thread; every few seconds the worker
  predicts that region with the network as it is and the prediction layer is updated there;
- removing a layer the run uses, or closing the viewer, stops the worker without a result.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import (
    Notification,
    notification_manager,
    show_error,
    show_info,
    show_warning,
)
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QMessageBox

from ..core import (
    PredictEvent,
    TrainConfig,
    TrainEvent,
    VoxSegError,
    check_image,
    class_weights,
    dice_per_class,
    iter_predict,
    iter_train,
    load_model,
    resolve_device,
    save_model,
)
from ..core.blocks import iter_predict_blocks
from ..core.checkpoint import check_model_folder
from ..core.device import DEVICES
from ..core.infer import voxel_mismatch
from ..core.losses import LOSSES, losses_for, resolve_loss
from ..core.models import describe_network
from ..core.outputs import MODEL, written_by_voxseg
from ..core.targets import prepare_target
from ..core.train import FINE_TUNE_LR_FACTOR, PreviewEvent, plan_config
from .curve import LossCurve

NETWORK_CHOICES = [("auto: 2D for thin stacks", "auto"), ("3D U-Net", "3d"),
                   ("2D U-Net, slice by slice", "2d")]
TASK_CHOICES = [("multi-class", "multiclass"), ("multi-label", "multilabel"),
                ("regression", "regression")]
# Multi-label layers: 1 = absent (grey in annotations, hidden in predictions), 2 = present.
_CLASS_COLOURS = ["#ff7f0e", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#17becf"]


def multilabel_colormap(index: int, prediction: bool) -> DirectLabelColormap:
    colour = _CLASS_COLOURS[index % len(_CLASS_COLOURS)]
    absent = "transparent" if prediction else "#808080"
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: absent,
                                           2: colour})


class _Latest:
    """A one-slot mailbox between threads: put() replaces, take() empties (None if empty)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._value = None

    def put(self, value) -> None:
        with self._lock:
            self._value = value

    def take(self):
        with self._lock:
            value, self._value = self._value, None
        return value


class _Job:
    """What one worker run shares with the main thread."""

    def __init__(self, kind: str, target, layers):
        self.kind = kind  # "train" or "predict"
        self.target = target  # the image layer whose prediction is shown
        self.layers = layers  # every layer the run reads; removing one stops it
        self.stop = threading.Event()  # stop training, keep the best model, predict
        self.abandon = threading.Event()  # stop everything, show nothing (closing, removal)
        self.done = threading.Event()  # set by the worker as it ends
        self.strokes = _Latest()  # newer strokes for the worker
        self.copy_strokes = None  # main thread: a fresh copy of the strokes
        self.region = None  # main thread -> worker: the block in view (three slices)
        self.full_preview = False  # main thread -> worker: predict everything at next step
        self.closing = False  # the window is closing: say nothing, touch nothing
        self.live_layers = []  # the layers whose painting joins a running training
        self.patch = None
        self.class_names = None
        self.first_step = 0
        self.bar = None  # napari's progress indicator
        self.task_id = None  # napari's task status (asks before closing the window)

    def preview_region(self):
        if self.full_preview:
            self.full_preview = False
            return (slice(None),) * 3
        return self.region

    def preview_now(self) -> bool:
        return self.full_preview


@dataclass
class _Inputs:
    """What a training run learns from, copied from the layers on the main thread."""

    labels: object  # the strokes (or the regression target), as the core takes them
    kwargs: dict  # more for iter_train (mask, boundary_reference, model, resume)
    names: list | None  # class names
    layers: list  # every layer read: removing one stops the run
    live_layers: list  # the layers whose painting joins a running training
    copy_strokes: object  # () -> a fresh copy of the strokes, for the worker's get_labels


def _train_job(job: _Job, image, labels, config, voxel_size, model=None, outputs=None,
               **kwargs):
    """Worker body: train (with live previews), then predict the whole volume. Yields core
    events; returns ``(TrainResult, PredictResult | None)``."""
    outputs = outputs or {}
    try:
        result = yield from iter_train(image, labels, config, model=model,
                                       voxel_size=voxel_size, should_stop=job.stop.is_set,
                                       get_labels=job.strokes.take,
                                       preview_region=job.preview_region,
                                       preview_now=job.preview_now, **kwargs)
        if job.abandon.is_set():
            return result, None
        prediction = yield from iter_predict(result.model, image,
                                             should_stop=job.abandon.is_set, **outputs)
        return result, prediction
    finally:
        job.done.set()


def _predict_job(job: _Job, model, image, **kwargs):
    try:
        prediction = yield from iter_predict(model, image, should_stop=job.stop.is_set,
                                             **kwargs)
        return None, prediction
    finally:
        job.done.set()


def _scratch_store(name: str) -> Path:
    """Where a block-wise prediction of a lazy image is written: a new .zarr folder in the
    temporary directory (napari then reads it lazily)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60] or "image"
    folder = Path(tempfile.gettempdir()) / "napari-voxseg"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.zarr"


def _predict_blocks_job(job: _Job, model, data, out: Path, voxel_size, *, probabilities,
                        uncertainty):
    """Block by block into zarr stores; returns (None, {output: path}) or (None, {})."""
    try:
        stem = str(out)[: -len(".zarr")]
        written = yield from iter_predict_blocks(
            model, data, out, voxel_size=voxel_size, should_stop=job.stop.is_set,
            probabilities=f"{stem}-probabilities.zarr" if probabilities else None,
            uncertainty=f"{stem}-uncertainty.zarr" if uncertainty else None)
        return None, written
    finally:
        job.done.set()


def _class_name(layer_name: str, image_layer) -> str:
    """'scan nuclei' -> 'nuclei' when the image is 'scan': the class, without the image's name."""
    prefix = f"{image_layer.name} " if image_layer is not None else ""
    rest = layer_name[len(prefix):].strip() if layer_name.startswith(prefix) else ""
    return rest or layer_name


def _spatial(layer) -> tuple[list[float], list[float]]:
    return list(layer.scale[-3:]), list(layer.translate[-3:])


def _limits(data: np.ndarray) -> tuple[float, float]:
    low, high = float(np.nanmin(data)), float(np.nanmax(data))
    return (low, high) if high > low else (low, low + 1.0)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    return scene.camera if scene is not None else viewer.camera


def _canvas_size(viewer) -> tuple[float, float] | None:
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    size = size if size is not None else getattr(viewer, "_canvas_size", None)
    return None if size is None else tuple(float(v) for v in size)


# A live preview covers at most this many tiles along each axis in view, around its centre,
# so that it takes seconds on a CPU however large the volume and however far out the zoom.
PREVIEW_TILES_2D = 4
PREVIEW_TILES_3D = 2


def view_region(viewer, layer, patch) -> tuple[slice, slice, slice] | None:
    """The block of ``layer`` (its last three axes, Z, Y, X) that the viewer shows: in 2D the
    slice in view with its neighbours, over the part of the plane on the canvas; in 3D a
    block around the camera's centre. None when the view does not meet the volume."""
    spatial = layer.data.shape[-3:]
    scale = np.asarray(layer.scale[-3:], float)
    translate = np.asarray(layer.translate[-3:], float)
    first = viewer.dims.ndim - 3  # the layer's spatial axes are the viewer's last three
    displayed = list(viewer.dims.displayed)
    camera = _camera(viewer)
    centre = np.asarray(camera.center, float)[-len(displayed):]
    canvas = _canvas_size(viewer) if len(displayed) == 2 else None
    point = np.asarray(viewer.dims.point, float)[-3:]
    region = []
    for axis, (size, p) in enumerate(zip(spatial, patch)):
        if first + axis in displayed:
            k = displayed.index(first + axis)
            middle = (centre[k] - translate[axis]) / scale[axis]
            if canvas is not None:
                half = canvas[k] / 2 / max(camera.zoom, 1e-9) / scale[axis]
                half = min(half, PREVIEW_TILES_2D * p / 2)
                lo, hi = int(math.floor(middle - half)), int(math.ceil(middle + half))
            else:  # 3D: a block of the budget's size, moved inside the volume if need be
                length = min(size, PREVIEW_TILES_3D * p)
                lo = min(max(0, int(round(middle - length / 2))), size - length)
                hi = lo + length
        else:  # the slice in view, and a few on each side (one tile deep with context)
            middle = int(round((point[axis] - translate[axis]) / scale[axis]))
            reach = max(0, p // 4 - 1)
            lo, hi = middle - reach, middle + reach + 1
        lo, hi = max(0, lo), min(size, hi)
        if hi <= lo:
            return None
        region.append(slice(lo, hi))
    return tuple(region)


class VoxSegWidget(Container):
    """Pick an image, paint strokes, train, predict, save and load models."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(scrollable=False)
        self.viewer = napari_viewer
        self.model = None  # the trained or loaded network (torch.nn.Module with .config)
        self._worker = None
        self._job: _Job | None = None
        self._resume = None  # where the last stopped run was: Continue goes on from there
        self.last_train_event = None
        self.previews: list[dict] = []  # live previews shown during the last run

        self.image_choice = ComboBox(label="Image", choices=self._image_layers)
        self.channels = Select(label="More channels", choices=self._channel_layers,
                               tooltip="Other image layers of the same shape (e.g. the other "
                                       "channels of the acquisition), given to the network "
                                       "together with the image as input channels")
        self.task = ComboBox(label="Task", choices=TASK_CHOICES, value="multiclass",
                             tooltip="multi-class: each voxel one class; multi-label: classes "
                                     "may overlap, one annotation layer per class (1 = absent, "
                                     "2 = present); regression: learn a float image")
        self.labels_choice = ComboBox(label="Annotations", choices=self._labels_layers)
        self.multi_labels = Select(label="Annotations", choices=self._labels_layers,
                                   tooltip="One layer per class: 1 = absent, 2 = present")
        self.target_choice = ComboBox(label="Target", choices=self._image_layers,
                                      tooltip="The float image to learn (e.g. a distance map)")
        self.mask_choice = ComboBox(label="Known where", choices=self._mask_layers,
                                    tooltip="Where the target is known (nonzero); "
                                            "'everywhere' uses every voxel")
        self.new_labels_button = PushButton(text="New annotations")
        self.classes = SpinBox(label="Classes", value=0, min=0, max=255,
                               tooltip="Number of classes; 0 = the largest class id painted")
        self.loss = ComboBox(label="Loss", choices=self._loss_choices,
                             tooltip="Only the losses that fit the task are offered")
        self.focal_gamma = FloatSpinBox(label="Focal gamma", value=TrainConfig.focal_gamma,
                                        min=0.0, max=10.0, step=0.5)
        self.boundary_choice = ComboBox(label="Boundaries from", choices=self._boundary_sources,
                                        tooltip="Where class boundaries are found for the "
                                                "boundary weights: the strokes or a prediction")
        self.weights = LineEdit(label="Class weights", value="none",
                                tooltip="none, auto (inverse stroke frequency), median "
                                        "(median-frequency balancing) or w1,w2,...")
        self.weights_info = Label(label="Weights", value="")
        self.iterations = SpinBox(label="Iterations", value=TrainConfig.iterations, min=1,
                                  max=1_000_000)
        self.learning_rate = LineEdit(label="Learning rate", value=str(TrainConfig.learning_rate),
                                      tooltip="Fine-tune starts at "
                                              f"{FINE_TUNE_LR_FACTOR:g} x this rate")
        self.network = ComboBox(label="Network", choices=NETWORK_CHOICES, value="auto",
                                tooltip="auto: a 2D U-Net applied slice by slice when the "
                                        "stack has fewer slices than a 3D patch, else a 3D "
                                        "U-Net whose pooling follows the voxel size (scale)")
        self.device = ComboBox(label="Device", choices=DEVICES, value="auto")
        self.preview_every = SpinBox(label="Preview every (s)", value=5, min=0, max=600,
                                     tooltip="While training, predict the region in view this "
                                             "often; 0 = only at the end")
        self.ground_truth = ComboBox(label="Ground truth", choices=self._truth_layers,
                                     tooltip="A Labels layer to score the live previews against "
                                             "(Dice, drawn with the loss)")
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
        self.progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self.status = Label(label="Status", value="Paint strokes, then press Train")
        self.want_probabilities = CheckBox(text="Probabilities", value=False,
                                           tooltip="Also show the probability of each class "
                                                   "(Image layers)")
        self.want_uncertainty = CheckBox(text="Uncertainty", value=False,
                                         tooltip="Also show where the network is unsure: the "
                                                 "entropy of the probabilities, 0 to 1")
        self.resample = CheckBox(text="Resample", value=False,
                                 tooltip="When the image's voxel size (layer scale) differs "
                                         "from the model's, predict at the model's voxel size "
                                         "and resample the results back")
        self.outputs = Container(widgets=[self.want_probabilities, self.want_uncertainty,
                                          self.resample],
                                 layout="horizontal", labels=False)
        self.outputs.margins = (0, 0, 0, 0)
        self.predict_button = PushButton(text="Predict with model",
                                         tooltip="Label the chosen image with the model; a "
                                                 "lazy (dask/zarr) image is done block by "
                                                 "block into a zarr store")
        self.save_button = PushButton(text="Save model...")
        self.load_button = PushButton(text="Load model...")
        self.model_info = Label(label="Model", value="none")
        self.extend([
            self.image_choice, self.channels, self.task, self.labels_choice, self.multi_labels,
            self.target_choice, self.mask_choice, self.new_labels_button, self.classes,
            self.loss, self.focal_gamma, self.boundary_choice, self.weights, self.weights_info,
            self.iterations, self.learning_rate, self.network, self.device,
            self.preview_every,
            self.ground_truth, self.buttons, self.progress, self.status, self.outputs,
            self.predict_button, self.save_button, self.load_button, self.model_info,
        ])
        self.curve = LossCurve()
        self.native.layout().insertWidget(self.index(self.status) + 1, self.curve)
        self._watched: list = []  # annotation layers whose painting updates the weights shown
        self._weights_timer = QTimer()
        self._weights_timer.setSingleShot(True)
        self._weights_timer.setInterval(300)
        self._weights_timer.timeout.connect(self.update_weights_info)

        self._strokes_timer = QTimer()  # copies strokes painted during training, when paused
        self._strokes_timer.setSingleShot(True)
        self._strokes_timer.setInterval(300)
        self._strokes_timer.timeout.connect(self._send_strokes)

        self.new_labels_button.changed.connect(self.new_annotations)
        self.train_button.changed.connect(self.train)
        self.stop_button.changed.connect(self.stop)
        self.continue_button.changed.connect(self.continue_training)
        self.fine_tune_button.changed.connect(self.fine_tune)
        self.predict_button.changed.connect(self.predict)
        self.save_button.changed.connect(self._save_clicked)
        self.load_button.changed.connect(self._load_clicked)
        self.task.changed.connect(self._task_changed)
        self.image_choice.changed.connect(self.channels.reset_choices)
        self.channels.native.setMaximumHeight(64)
        self.loss.changed.connect(self._show_task_widgets)
        for widget in (self.labels_choice, self.multi_labels, self.weights, self.classes):
            widget.changed.connect(self._watch_annotations)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.reset_choices)
        events.removed.connect(self._layer_removed)
        dims, camera = self.viewer.dims.events, _camera(self.viewer).events
        for event in (dims.current_step, dims.ndisplay, dims.order, camera.center, camera.zoom):
            event.connect(self._update_region)
        # Closing the window asks napari's task manager to cancel running tasks first.
        self.native.destroyed.connect(self._abandon_quietly)
        self.reset_choices()
        self._task_changed()

    # ---- layer choices --------------------------------------------------------------------
    def _layers_of(self, kind):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, kind)]

    def _image_layers(self, _widget=None):
        return self._layers_of(napari.layers.Image)

    def _channel_layers(self, _widget=None):
        """Image layers that can join the chosen image as channels: same spatial shape."""
        image = self.image_choice.value if hasattr(self, "image_choice") else None
        if image is None:
            return []
        shape = tuple(image.data.shape[-3:])
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, napari.layers.Image) and layer is not image
                and not layer.rgb and not layer.multiscale
                and tuple(layer.data.shape[-3:]) == shape and layer.data.ndim in (3, 4)]

    def _input_image(self, image_layer, channels: int | None = None):
        """The image and the chosen extra channels, as one float32 (C, Z, Y, X) array.
        ``channels``: the count a model takes (checked, with advice)."""
        extra = [layer for layer in (self.channels.value or []) if layer is not image_layer]
        parts = [check_image(layer.data, name=layer.name) for layer in [image_layer, *extra]]
        for layer, part in zip(extra, parts[1:]):
            if part.shape[1:] != parts[0].shape[1:]:
                raise VoxSegError(f"channel layer {layer.name} has shape {part.shape[1:]}, not "
                                  f"the image's {parts[0].shape[1:]}; choose layers of the "
                                  "same shape under 'More channels'")
        image = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if channels is not None and image.shape[0] != channels:
            raise VoxSegError(f"the model takes {channels} channel(s) but {image_layer.name}"
                              f"{' with the chosen channels' if extra else ''} has "
                              f"{image.shape[0]}; choose {channels} channel(s) in all (the "
                              "image plus 'More channels')")
        return image

    def _labels_layers(self, _widget=None):
        return self._layers_of(napari.layers.Labels)

    def _mask_layers(self, _widget=None):
        return [("everywhere", "everywhere"), *self._labels_layers()]

    def _boundary_sources(self, _widget=None):
        return [("strokes", "strokes"), *self._labels_layers()]

    def _truth_layers(self, _widget=None):
        return [("none", None), *self._labels_layers()]

    def _loss_choices(self, _widget=None):
        task = self.task.value if hasattr(self, "task") else "multiclass"
        return [(f"{name}: {LOSSES[resolve_loss(name, task)].description}", name)
                for name in losses_for(task)]

    # ---- the form follows the task ----------------------------------------------------------
    def _task_changed(self, _value=None) -> None:
        self.loss.reset_choices()
        self._show_task_widgets()
        self._watch_annotations()

    def _show_task_widgets(self, _value=None) -> None:
        task = self.task.value
        loss = resolve_loss(self.loss.value, task) if self.loss.value else None
        self.labels_choice.visible = task == "multiclass"
        self.classes.visible = task == "multiclass"
        self.multi_labels.visible = task == "multilabel"
        self.target_choice.visible = self.mask_choice.visible = task == "regression"
        self.weights.visible = self.weights_info.visible = task != "regression"
        self.new_labels_button.text = "New mask" if task == "regression" else "New annotations"
        self.focal_gamma.visible = loss is not None and LOSSES[loss].gamma
        self.boundary_choice.visible = loss == "boundary_ce"

    def _annotation_layers(self) -> list:
        if self.task.value == "multiclass":
            return [self.labels_choice.value] if self.labels_choice.value is not None else []
        if self.task.value == "multilabel":
            return list(self.multi_labels.value or [])
        return []

    def _watch_annotations(self, _value=None) -> None:
        """Show the class weights for the current strokes, and again whenever they change."""
        for layer in self._watched:
            layer.events.paint.disconnect(self._schedule_weights_info)
            layer.events.data.disconnect(self._schedule_weights_info)
        self._watched = self._annotation_layers()
        for layer in self._watched:
            layer.events.paint.connect(self._schedule_weights_info)
            layer.events.data.connect(self._schedule_weights_info)
        self.update_weights_info()

    def _schedule_weights_info(self, _event=None) -> None:
        self._weights_timer.start()  # at most one recount per 300 ms of painting

    def update_weights_info(self) -> str:
        """Compute the class weights from the current strokes and show them (before training)."""
        task = self.task.value
        if task == "regression":
            self.weights_info.value = ""
            return ""
        layers = self._annotation_layers()
        try:
            if not layers:
                raise VoxSegError("choose the annotation layer(s)")
            data = [np.asarray(layer.data) for layer in layers]
            target = prepare_target(task, data if task == "multilabel" else data[0],
                                    data[0].shape, names=[layer.name for layer in layers],
                                    num_classes=(int(self.classes.value) or None)
                                    if task == "multiclass" else None)
            weights = class_weights(self.weights.value, target.data, target.num_outputs,
                                    task=task)
            counts = target.counts()
            painted = ("strokes " + ", ".join(map(str, counts)) if task == "multiclass" else
                       "present/absent " + ", ".join(f"{p}/{a}" for a, p in counts))
        except VoxSegError as exc:
            text = str(exc).split(";")[0]
        else:
            shown = "none" if weights is None else ", ".join(f"{w:.3g}" for w in weights)
            text = f"{shown} ({painted})"
        self.weights_info.value = text if len(text) < 90 else text[:87] + "..."
        self.weights_info.tooltip = text
        return text

    @property
    def running(self) -> bool:
        return self._worker is not None

    def _notify_error(self, message: str) -> None:
        self.status.value = message if len(message) < 80 else message[:77] + "..."
        show_error(message)

    # ---- actions --------------------------------------------------------------------------
    def new_annotations(self) -> napari.layers.Labels | None:
        """Add an empty Labels layer with the image's spatial shape, scale and translation."""
        image_layer = self.image_choice.value
        if image_layer is None:
            self._notify_error("no image layer: open a volume first (File > Open or File > "
                               "Open Sample)")
            return None
        shape = image_layer.data.shape[-3:] if image_layer.data.ndim >= 3 else None
        if shape is None:
            self._notify_error(f"{image_layer.name} is {image_layer.data.ndim}D; voxseg needs a "
                               "3D volume (Z, Y, X)")
            return None
        scale, translate = _spatial(image_layer)
        task = self.task.value
        name = f"{image_layer.name} " + {"multiclass": "annotations", "regression": "known"}.get(
            task, f"class {len(self.multi_labels.value or []) + 1}")
        layer = self.viewer.add_labels(np.zeros(shape, dtype=np.uint8), name=name,
                                       scale=scale, translate=translate)
        layer.mode = "paint"
        layer.selected_label = 1
        if task == "multiclass":
            self.labels_choice.value = layer
        elif task == "multilabel":
            layer.colormap = multilabel_colormap(len(self.multi_labels.value or []), False)
            layer.selected_label = 2  # paint where the class is; 1 where it is not
            self.multi_labels.value = [*(self.multi_labels.value or []), layer]
        else:
            self.mask_choice.value = layer
        return layer

    def _form_config(self, device, class_names=None) -> TrainConfig:
        threads = max(1, (os.cpu_count() or 2) - 1) if device.type == "cpu" else None
        task = self.task.value
        return TrainConfig(iterations=int(self.iterations.value), task=task,
                           loss=self.loss.value, focal_gamma=float(self.focal_gamma.value),
                           class_weights=self.weights.value if task != "regression" else "none",
                           num_classes=(int(self.classes.value) or None)
                           if task == "multiclass" else None,
                           class_names=class_names, device=str(device), num_threads=threads,
                           network=self.network.value)

    def _input_name(self) -> str | None:
        layer = {"multiclass": self.labels_choice.value,
                 "regression": self.target_choice.value}.get(self.task.value)
        return None if layer is None else layer.name

    def _training_inputs(self) -> _Inputs:
        """Copies (taken here, on the main thread) of what the task learns from. The worker
        never sees the layers themselves, so training can never change them."""
        task = self.task.value
        kwargs = {}
        if task == "multiclass":
            layer = self.labels_choice.value
            if layer is None:
                raise VoxSegError("no annotations layer: press 'New annotations' and paint a "
                                  "few strokes of each class")
            layers = [layer]
            names = None

            def copy_strokes():
                return np.array(layer.data, copy=True)
        elif task == "multilabel":
            layers = list(self.multi_labels.value or [])
            if not layers:
                raise VoxSegError("no annotation layers chosen: a multi-label task needs one "
                                  "layer per class (press 'New annotations' once per class)")
            names = [_class_name(layer.name, self.image_choice.value) for layer in layers]

            def copy_strokes():
                return [np.array(layer.data, copy=True) for layer in layers]
        else:
            target = self.target_choice.value
            if target is None:
                raise VoxSegError("no target layer: open the float image to learn (e.g. a "
                                  "distance map) as an Image layer")
            mask = self.mask_choice.value
            mask = None if mask in (None, "everywhere") else mask
            layers = [target] if mask is None else [target, mask]
            names = [target.name]

            def copy_strokes():  # regression: what changes while training is the mask
                return None if mask is None else np.array(mask.data, copy=True)
            kwargs["mask"] = copy_strokes()
        labels = copy_strokes() if task != "regression" else np.array(target.data, copy=True)
        live = layers[1:] if task == "regression" else list(layers)
        boundary = self.loss.value and resolve_loss(self.loss.value, task) == "boundary_ce"
        if boundary and self.boundary_choice.value not in (None, "strokes"):
            kwargs["boundary_reference"] = np.array(self.boundary_choice.value.data, copy=True)
            layers.append(self.boundary_choice.value)
        return _Inputs(labels, kwargs, names, layers, live, copy_strokes)

    def _learning_rate(self) -> float:
        text = str(self.learning_rate.value).strip()
        try:
            value = float(text)
        except ValueError:
            raise VoxSegError(f"learning rate {text!r} is not a number; type one like 0.003") \
                from None
        return value

    def train(self, *, fine_tune: bool = False) -> None:
        """Train on the chosen image and annotations in a background worker: a new network,
        or (``fine_tune``) the current model further, at a lower learning rate."""
        if self.running:
            return
        try:
            if fine_tune and self.model is None:
                raise VoxSegError("no model to fine-tune: train one or press 'Load model...'")
            model_task = self.model.config.get("task", "multiclass") if fine_tune else None
            if fine_tune and model_task != self.task.value:
                raise VoxSegError(f"the model does a {model_task} task, not {self.task.value}; "
                                  f"set Task to {model_task}, or press Train for a new model")
            image_layer = self.image_choice.value
            if image_layer is None:
                raise VoxSegError("no image layer: open a volume first")
            channels = (self.model.config["architecture"]["in_channels"] if fine_tune
                        else None)
            image = self._input_image(image_layer, channels)
            inputs = self._training_inputs()
            device = resolve_device(self.device.value)
            config = self._form_config(device, class_names=inputs.names)
            config.learning_rate = self._learning_rate() * (FINE_TUNE_LR_FACTOR if fine_tune
                                                            else 1.0)
            config = config.checked()
            # The checks training will make, made now so that a mistake is told at once.
            target = prepare_target(config.task, inputs.labels, image.shape[1:],
                                    names=inputs.names, num_classes=config.num_classes,
                                    mask=inputs.kwargs.get("mask"), name=self._input_name())
            class_weights(config.class_weights, target.data, target.num_outputs,
                          task=config.task)
            if fine_tune:
                # A copy: self.model stays whole (and can be saved) while this one trains.
                inputs.kwargs["model"] = copy.deepcopy(self.model)
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return
        self._start_training(image_layer, inputs, image, config)

    def fine_tune(self) -> None:
        """Train the current (trained or loaded) model further on the strokes."""
        self.train(fine_tune=True)

    def continue_training(self) -> None:
        """Go on with the last stopped run from where it stopped, with the current strokes."""
        if self.running:
            return
        resume = self._resume
        try:
            if resume is None or self.model is None:
                raise VoxSegError("nothing to continue: Continue goes on with a run you "
                                  "stopped; press Train or Fine-tune")
            image_layer = self.image_choice.value
            if image_layer is None:
                raise VoxSegError("no image layer: open a volume first")
            if self.task.value != resume.config.task:
                raise VoxSegError(f"the stopped run was a {resume.config.task} task; set Task "
                                  f"back to {resume.config.task}, or press Train for a new one")
            image = self._input_image(image_layer,
                                      self.model.config["architecture"]["in_channels"])
            inputs = self._training_inputs()
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return
        inputs.kwargs.update(model=copy.deepcopy(self.model), resume=resume)
        self._start_training(image_layer, inputs, image, resume.config, first_step=resume.step)

    def _start_training(self, image_layer, inputs: _Inputs, image, config, *,
                        first_step: int = 0) -> None:
        job = _Job("train", image_layer, [image_layer, *(self.channels.value or []),
                                          *inputs.layers])
        job.copy_strokes, job.live_layers = inputs.copy_strokes, inputs.live_layers
        scale, _ = _spatial(image_layer)
        model = inputs.kwargs.get("model")
        try:  # the patch the run will use (for the previews' region)
            if model is None:
                job.patch = plan_config(config, image.shape[1:], tuple(scale))[0].patch_size
            else:  # fine-tuning keeps the model's patch unless told otherwise
                job.patch = tuple(config.patch_size or model.config["patch_size"])
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return
        job.first_step = first_step
        job.class_names = inputs.names
        for layer in job.live_layers:
            layer.events.paint.connect(self._strokes_changed)
            layer.events.data.connect(self._strokes_changed)
        self.previews = []
        if first_step == 0:
            self.curve.clear()
        self._start(job, config.iterations, _train_job, job, image, inputs.labels, config,
                    tuple(scale), preview_every=float(self.preview_every.value) or math.inf,
                    outputs=self._extra_outputs_for(config.task), **inputs.kwargs)
        self._update_region()

    def predict(self) -> None:
        """Predict the chosen image with the current model, in a background worker. While
        training, predict the whole volume with the network as it is, at the next step."""
        if self.running:
            if self._job.kind == "train":
                self._job.full_preview = True
                self.status.value = "predicting the whole volume at the next step..."
            return
        try:
            if self.model is None:
                raise VoxSegError("no model yet: train one or press 'Load model...'")
            image_layer = self.image_choice.value
            if image_layer is None:
                raise VoxSegError("no image layer: open a volume first")
            extra = self._extra_outputs()
            voxel = tuple(float(v) for v in image_layer.scale[-3:])
            resample = bool(self.resample.value)
            data = image_layer.data[0] if image_layer.multiscale else image_layer.data
            lazy = not isinstance(data, np.ndarray)
            channels = self.model.config["architecture"]["in_channels"]
            if lazy and resample and voxel_mismatch(self.model, voxel):
                raise VoxSegError("resampling works on images in memory, and this one is "
                                  "lazy (zarr/dask); untick Resample, or resample the volume "
                                  "first")
            if lazy and not self.channels.value:  # dask, zarr...: never loaded whole
                self._warn_voxel_size(voxel, offer_resample=False)
                job = _Job("predict", image_layer, [image_layer])
                self._start(job, 0, _predict_blocks_job, job, self.model, data,
                            _scratch_store(image_layer.name), voxel, **extra)
                return
            image = self._input_image(image_layer, channels)
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return
        if not resample:
            self._warn_voxel_size(voxel, offer_resample=not lazy)
        job = _Job("predict", image_layer, [image_layer, *(self.channels.value or [])])
        self._start(job, 0, _predict_job, job, self.model, image, voxel_size=voxel,
                    resample=resample, **extra)

    def _warn_voxel_size(self, voxel, *, offer_resample: bool) -> None:
        """Tell the user when the image's voxel size is not the model's, with a button that
        predicts again resampled (``offer_resample``: for images in memory)."""
        message = voxel_mismatch(self.model, voxel)
        if not message:
            return

        def resample_and_predict(_notification=None):
            self.resample.value = True
            if not self.running:
                self.predict()

        notification = Notification(f"{message} (tick Resample)", severity="warning",
                                    actions=[("Resample", resample_and_predict)]
                                    if offer_resample else ())
        notification_manager.dispatch(notification)
        self.status.value = "voxel size differs from the model's; see the notification"

    def _extra_outputs(self) -> dict:
        return self._extra_outputs_for(self.model.config.get("task", "multiclass"))

    def _extra_outputs_for(self, task: str) -> dict:
        """Probabilities / uncertainty, as asked for in the form (not for regression)."""
        if task == "regression":
            return {"probabilities": False, "uncertainty": False}
        return {"probabilities": bool(self.want_probabilities.value),
                "uncertainty": bool(self.want_uncertainty.value)}

    def stop(self) -> None:
        """Stop training after the current step; the best model so far is kept and applied."""
        if self.running:
            self._job.stop.set()
            self.status.value = "stopping..."

    def _start(self, job: _Job, total: int, function, *args, **kwargs) -> None:
        self._job = job
        self.progress.value = 0
        self._set_running(True)
        if total:  # napari's own progress indicator (bottom right), for training steps
            job.bar = progress(total=total, desc="VoxSeg training")
            job.bar.update(job.first_step)
        register = getattr(self.viewer.window, "_register_task_status", None)
        if register is not None:  # napari asks before closing the window, then cancels us
            from napari.utils.task_status import Status

            job.task_id = register("napari-voxseg", Status.BUSY, job.kind,
                                   cancel_callback=self._abandon_quietly)
        self._worker = create_worker(
            function, *args, **kwargs, _start_thread=False, _ignore_errors=True,
            _connect={"yielded": self._on_event, "returned": self._on_returned,
                      "errored": self._on_error, "finished": self._on_finished},
        )
        self._worker.start()

    def _set_running(self, running: bool) -> None:
        self.train_button.enabled = self.load_button.enabled = not running
        self.fine_tune_button.enabled = not running and self.model is not None
        self.continue_button.enabled = not running and self._resume is not None
        self.save_button.enabled = not running
        self.stop_button.enabled = running
        # While training, Predict asks for a whole-volume preview.
        self.predict_button.enabled = not running or self._job.kind == "train"

    # ---- while training: strokes in, region in view, layers removed, window closed --------
    def _strokes_changed(self, _event=None) -> None:
        self._strokes_timer.start()  # copied once painting pauses for 300 ms

    def _send_strokes(self) -> None:
        """Hand the worker a copy of the strokes as they are now (main thread)."""
        job = self._job
        if job is not None and job.copy_strokes is not None and not job.done.is_set():
            job.strokes.put(job.copy_strokes())

    def _update_region(self, _event=None) -> None:
        job = self._job
        if job is not None and job.kind == "train" and job.target in self.viewer.layers:
            job.region = view_region(self.viewer, job.target, job.patch)

    def _layer_removed(self, event) -> None:
        job = self._job
        if job is None or job.done.is_set():
            return
        if any(layer is event.value for layer in job.layers):
            self._abandon()
            message = (f"VoxSeg stopped: the layer '{event.value.name}' it was using was "
                       "removed; nothing was changed")
            # Told a moment later, unless it is the whole viewer closing (all layers go first).
            QTimer.singleShot(0, lambda: None if job.closing else show_warning(message))

    def _abandon(self) -> None:
        """Stop the run and show nothing from it (its layers or the viewer are going)."""
        job = self._job
        if job is not None:
            job.abandon.set()
            job.stop.set()

    def _abandon_quietly(self, *_args) -> bool:
        """The window is closing: stop the worker, wait for it, and let no handler run on the
        widgets that are about to go. Returns True (napari's task cancel callback)."""
        job, worker = self._job, self._worker
        if job is None or worker is None:
            return True
        job.closing = True
        self._abandon()
        for signal, handler in (("yielded", self._on_event), ("returned", self._on_returned),
                                ("errored", self._on_error), ("finished", self._on_finished)):
            try:
                getattr(worker, signal).disconnect(handler)
            except (TypeError, RuntimeError):
                pass
        job.done.wait(timeout=60)  # one training step or one batch of tiles
        self._end_job(job)
        self._worker = None
        return True

    def _end_job(self, job: _Job) -> None:
        self._strokes_timer.stop()
        for layer in getattr(job, "live_layers", []):
            for event in (layer.events.paint, layer.events.data):
                event.disconnect(self._strokes_changed)
        if job.bar is not None:
            job.bar.close()
            job.bar = None
        update = getattr(self.viewer.window, "_update_task_status", None)
        if job.task_id is not None and update is not None:
            from napari.utils.task_status import Status

            update(job.task_id, Status.CANCELLED if job.abandon.is_set() else Status.COMPLETED)
        if self._job is job:
            self._job = None

    # ---- worker handlers (main thread) ----------------------------------------------------
    def _on_event(self, event) -> None:
        job = self._job
        if job is None:
            return
        if isinstance(event, TrainEvent):
            self.last_train_event = event
            self.progress.value = int(100 * event.step / event.total)
            done_here = event.step - job.first_step
            left = (event.total - event.step) * event.elapsed / max(1, done_here)
            self.status.value = (f"step {event.step}/{event.total}  loss "
                                 f"{event.smoothed_loss:.4f}  {_duration(event.elapsed)}, "
                                 f"~{_duration(left)} left")
            self.curve.add_loss(event.step, event.loss, event.smoothed_loss)
            if job.bar is not None:
                job.bar.update(event.step - job.bar.n)
        elif isinstance(event, PreviewEvent):
            if job.abandon.is_set() or job.target not in self.viewer.layers:
                return
            self.show_result(job.target, event.result, region=event.region)
            entry = {"time": time.perf_counter(), "step": event.step,
                     "annotated": event.annotated, "seconds": event.seconds,
                     "region": event.region}
            dice = self._score(event.result, event.region)
            if dice is not None:
                entry["dice"] = dice
                self.curve.add_dice(event.step, dice)
            self.previews.append(entry)
        elif isinstance(event, PredictEvent):
            self.progress.value = int(100 * event.done / event.total)
            self.status.value = f"predicting {event.done}/{event.total} tiles"

    def _score(self, prediction, region=None) -> float | None:
        """Mean Dice of a multi-class prediction against the ground-truth layer, if chosen."""
        truth = self.ground_truth.value
        if truth is None or prediction.task != "multiclass" or prediction.labels is None:
            return None
        data = np.asarray(truth.data)
        if data.shape[-3:] != self._job_shape():
            return None
        reference = data if region is None else data[tuple(region)]
        scores = dice_per_class(prediction.labels, reference)
        return float(np.mean(list(scores.values()))) if scores else None

    def _job_shape(self):
        target = self._job.target if self._job is not None else self.image_choice.value
        return None if target is None else tuple(target.data.shape[-3:])

    def _on_returned(self, value) -> None:
        job = self._job
        result, prediction = value
        if result is not None:
            for note in result.adjustments:
                show_warning(note)
            if result.warning:
                show_warning(f"{result.warning}; kept the best model so far (step "
                             f"{result.best_step})")
            self.model = result.model
            self._resume = result.resume
            self.model_info.value = (f"trained {result.steps} steps, best loss "
                                     f"{result.best_loss:.4f}; "
                                     f"{describe_network(result.model.config)}")
        if job is not None and job.abandon.is_set():
            self.status.value = "stopped: a layer it used was removed; the model is kept"
            return
        if isinstance(prediction, dict):  # block-wise: zarr stores, opened lazily
            if not prediction:
                self.status.value = "prediction cancelled; nothing was written"
            elif job.target in self.viewer.layers:
                self.show_stores(job.target, prediction)
                self.status.value = f"prediction written to {prediction['labels']}"
            return
        if prediction is None or prediction.output is None:
            self.status.value = "prediction cancelled"
            return
        if job.target not in self.viewer.layers:
            return
        self.show_result(job.target, prediction)
        self.show_extras(job.target, prediction.probabilities, prediction.uncertainty)
        text = ("stopped; " if result is not None and result.stopped else "") + \
            "prediction updated"
        dice = self._score(prediction)
        if dice is not None:
            text += f"; mean Dice vs {self.ground_truth.value.name}: {dice:.3f}"
            if result is not None:
                self.curve.add_dice(result.steps, dice)
        self.status.value = text

    def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, VoxSegError):
            self._notify_error(str(exc))
        else:
            self._notify_error(f"VoxSeg failed ({type(exc).__name__}: {exc}); the layers are "
                               "unchanged, please report this with the steps that led to it")

    def _on_finished(self) -> None:
        if self._job is not None:
            self._end_job(self._job)
        self._worker = None
        self._set_running(False)

    def show_result(self, image_layer, prediction, region=None) -> list:
        """Show a PredictResult: one Labels layer '<image> prediction' (multi-class), one per
        class '<image> prediction: <class>' (multi-label, 1 = absent, 2 = present) or an Image
        layer '<image> prediction' (regression). ``region``: the result covers only this block
        (a live preview), written into the layers in place. Returns the layers."""
        if prediction.task == "regression":
            return [self.show_prediction(image_layer, prediction.values, kind="image",
                                         region=region)]
        if prediction.task == "multilabel":
            names = self._class_names(len(prediction.labels))
            layers = []
            for i, (name, labels) in enumerate(zip(names, prediction.labels)):
                layer = self.show_prediction(image_layer, labels, suffix=f": {name}",
                                             region=region)
                layer.colormap = multilabel_colormap(i, True)
                layers.append(layer)
            return layers
        return [self.show_prediction(image_layer, prediction.labels, region=region)]

    def show_extras(self, image_layer, probabilities, uncertainty) -> list:
        """Image layers '<image> probability: <class>' and '<image> uncertainty' (in place)."""
        layers = []
        if probabilities is not None:
            for name, p in zip(self._class_names(), probabilities):
                layers.append(self.show_prediction(image_layer, p, kind="image",
                                                   suffix=f" probability: {name}"))
        if uncertainty is not None:
            layer = self.show_prediction(image_layer, uncertainty, kind="image",
                                         suffix=" uncertainty")
            layer.colormap = "magma"
            layers.append(layer)
        return layers

    def show_stores(self, image_layer, stores: dict) -> list:
        """Show the zarr stores of a block-wise prediction as lazy (dask) layers, named as
        :meth:`show_result` and :meth:`show_extras` name them."""
        import dask.array as da

        scale, translate = _spatial(image_layer)
        task = self.model.config.get("task", "multiclass")
        names = self._class_names()
        base = f"{image_layer.name} prediction"
        parts = []  # (name, lazy data, kind)
        for key, path in stores.items():
            data = da.from_zarr(str(path))
            if key == "labels" and task == "multilabel":
                parts += [(f"{base}: {n}", data[i], "labels") for i, n in enumerate(names)]
            elif key == "labels":
                parts.append((base, data, "image" if task == "regression" else "labels"))
            elif key == "probabilities":
                parts += [(f"{base} probability: {n}", data[i], "image")
                          for i, n in enumerate(names)]
            else:
                parts.append((f"{base} uncertainty", data, "image"))
        layers = []
        for name, data, kind in parts:
            if name in self.viewer.layers and not self._protected(self.viewer.layers[name]):
                self.viewer.layers.remove(name)
            if kind == "labels":
                layers.append(self.viewer.add_labels(data, name=name, scale=scale,
                                                     translate=translate, opacity=0.5))
            else:
                layers.append(self.viewer.add_image(
                    data, name=name, scale=scale, translate=translate, blending="additive",
                    colormap="magma" if name.endswith("uncertainty") else "viridis",
                    contrast_limits=(0.0, 1.0) if task != "regression" else None))
        return layers

    def _class_names(self, count: int | None = None) -> list[str]:
        """Names for ``count`` outputs (default: the model's): the model's classes, or, for a
        preview of a run whose network differs from the current model, the run's."""
        config = self.model.config if self.model is not None else {}
        if count is None:
            count = config["architecture"]["num_classes"]
        names = [c.get("name", f"class {i + 1}") for i, c in enumerate(config.get("classes", []))]
        if len(names) != count and self._job is not None:
            names = list(self._job.class_names or [])
        names = names[:count]
        return names + [f"class {i + 1}" for i in range(len(names), count)]

    def _protected(self, layer) -> bool:
        """Whether ``layer`` is one the user paints or compares with (so results never go in)."""
        chosen = [self.labels_choice.value, self.mask_choice.value, self.target_choice.value,
                  self.boundary_choice.value, self.ground_truth.value,
                  *(self.multi_labels.value or [])]
        if self._job is not None:
            chosen += self._job.layers
        return any(layer is other for other in chosen)

    def show_prediction(self, image_layer, data: np.ndarray, *, kind: str = "labels",
                        suffix: str = "", region=None):
        """Show ``data`` as the layer '<image> prediction<suffix>', updated in place if a layer
        of that name, kind and shape is there (so its place in the layer list and its display
        settings stay), else added with the image's scale and translation. ``region``: ``data``
        is that block of the volume only; the rest of the layer stays (0 in a new one)."""
        name = f"{image_layer.name} prediction{suffix}"
        if name in self.viewer.layers and self._protected(self.viewer.layers[name]):
            # A prediction the user is now correcting as annotations is theirs: never written.
            name = f"{image_layer.name} prediction (new){suffix}"
        scale, translate = _spatial(image_layer)
        cls = napari.layers.Labels if kind == "labels" else napari.layers.Image
        shape = data.shape if region is None else tuple(image_layer.data.shape[-3:])
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if type(layer) is cls and layer.data.shape == shape \
                    and layer.data.dtype == data.dtype:
                layer.data[(...,) if region is None else tuple(region)] = data
                if kind == "image":
                    layer.contrast_limits = _limits(layer.data)
                layer.refresh()
                return layer
            self.viewer.layers.remove(layer)
        if region is not None:
            block, data = data, np.zeros(shape, dtype=data.dtype)
            data[tuple(region)] = block
        if kind == "image":
            return self.viewer.add_image(data, name=name, scale=scale, translate=translate,
                                         colormap="viridis", blending="additive", opacity=0.7,
                                         contrast_limits=_limits(data))
        return self.viewer.add_labels(data, name=name, scale=scale, translate=translate,
                                      opacity=0.5)

    # ---- models ---------------------------------------------------------------------------
    def save_model(self, path, overwrite: bool = False) -> Path | None:
        """Save the model to the folder ``path``: a new name or an empty folder, or (with
        ``overwrite``) a model folder voxseg wrote; never a folder that holds anything else
        or a file a layer was opened from. A refusal is a notification."""
        try:
            if self.model is None:
                raise VoxSegError("no model to save: train one first")
            sources = [layer.source.path for layer in self.viewer.layers]
            check_model_folder(path, inputs=sources, overwrite=overwrite)
            saved = save_model(self.model, path, overwrite=overwrite)
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return None
        except OSError as exc:
            self._notify_error(f"could not save the model to {path}: {exc.strerror or exc}; "
                               "choose a folder you can write to")
            return None
        show_info(f"model saved to {saved}")
        return saved

    def load_model(self, path):
        try:
            model = load_model(path, device=resolve_device(self.device.value))
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return None
        self.model = model
        self._resume = None  # Continue goes on with a run of this session, not a file's
        self._set_running(False)
        names = ", ".join(c.get("name", "?") for c in model.config["classes"])
        task = model.config.get("task", "multiclass")
        self.model_info.value = f"{Path(path).name} ({task}): {names}; " \
            f"{describe_network(model.config)}"
        self.task.value = task
        if task == "multiclass":
            self.classes.value = model.config["architecture"]["num_classes"]
        loss = model.config.get("loss", {}).get("name")
        if loss in losses_for(task):
            self.loss.value = loss
        show_info(f"model loaded from {path}")
        return model

    def _save_clicked(self) -> None:
        # The dialog's own "replace?" would be asked of any existing name; ours is asked only
        # of a model folder voxseg wrote (save_model refuses any other folder).
        path, _ = QFileDialog.getSaveFileName(
            self.native, "Save model as folder", "voxseg-model",
            options=QFileDialog.Option.DontConfirmOverwrite)
        if not path:
            return
        overwrite = False
        if written_by_voxseg(path, MODEL):
            answer = QMessageBox.question(
                self.native, "Replace model?",
                f"{path} holds a voxseg model. Replace it with this one?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        self.save_model(path, overwrite=overwrite)

    def _load_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self.native, "Load model folder")
        if path:
            self.load_model(path)
