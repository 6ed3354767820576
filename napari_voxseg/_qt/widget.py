"""The VoxSeg dock widget: a form that builds a TrainConfig and runs the core in a worker.

Layers are read on the main thread (copies go to the worker) and changed only in the worker's
``returned`` handler, on the main thread. The user's annotation layer is never written to.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
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
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog

from ..core import (
    PredictEvent,
    TrainConfig,
    TrainEvent,
    VoxSegError,
    check_image,
    class_weights,
    iter_predict,
    iter_train,
    load_model,
    resolve_device,
    save_model,
)
from ..core.device import DEVICES
from ..core.losses import LOSSES, losses_for, resolve_loss
from ..core.targets import prepare_target

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


def _train_job(image, labels, config, voxel_size, stop: threading.Event, model=None,
               **kwargs):
    """Worker body: train, then predict the whole volume. Yields core events."""
    result = yield from iter_train(image, labels, config, model=model, voxel_size=voxel_size,
                                   should_stop=stop.is_set, **kwargs)
    prediction = yield from iter_predict(result.model, image)
    return result, prediction


def _predict_job(model, image, stop: threading.Event):
    prediction = yield from iter_predict(model, image, should_stop=stop.is_set)
    return None, prediction


def _class_name(layer_name: str, image_layer) -> str:
    """'scan nuclei' -> 'nuclei' when the image is 'scan': the class, without the image's name."""
    prefix = f"{image_layer.name} " if image_layer is not None else ""
    rest = layer_name[len(prefix):].strip() if layer_name.startswith(prefix) else ""
    return rest or layer_name


def _spatial(layer) -> tuple[list[float], list[float]]:
    return list(layer.scale[-3:]), list(layer.translate[-3:])


class VoxSegWidget(Container):
    """Pick an image, paint strokes, train, predict, save and load models."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(scrollable=False)
        self.viewer = napari_viewer
        self.model = None  # the trained or loaded network (torch.nn.Module with .config)
        self._worker = None
        self._stop = threading.Event()
        self._target = None  # the image layer the running job predicts

        self.image_choice = ComboBox(label="Image", choices=self._image_layers)
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
        self.device = ComboBox(label="Device", choices=DEVICES, value="auto")
        self.train_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self.status = Label(label="Status", value="Paint strokes, then press Train")
        self.predict_button = PushButton(text="Predict with model")
        self.save_button = PushButton(text="Save model...")
        self.load_button = PushButton(text="Load model...")
        self.model_info = Label(label="Model", value="none")
        self.extend([
            self.image_choice, self.task, self.labels_choice, self.multi_labels,
            self.target_choice, self.mask_choice, self.new_labels_button, self.classes,
            self.loss, self.focal_gamma, self.boundary_choice, self.weights, self.weights_info,
            self.iterations, self.device, self.train_button, self.stop_button, self.progress,
            self.status, self.predict_button, self.save_button, self.load_button,
            self.model_info,
        ])
        self._watched: list = []  # annotation layers whose painting updates the weights shown
        self._weights_timer = QTimer()
        self._weights_timer.setSingleShot(True)
        self._weights_timer.setInterval(300)
        self._weights_timer.timeout.connect(self.update_weights_info)

        self.new_labels_button.changed.connect(self.new_annotations)
        self.train_button.changed.connect(self.train)
        self.stop_button.changed.connect(self.stop)
        self.predict_button.changed.connect(self.predict)
        self.save_button.changed.connect(self._save_clicked)
        self.load_button.changed.connect(self._load_clicked)
        self.task.changed.connect(self._task_changed)
        self.loss.changed.connect(self._show_task_widgets)
        for widget in (self.labels_choice, self.multi_labels, self.weights, self.classes):
            widget.changed.connect(self._watch_annotations)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.reset_choices)
        self.reset_choices()
        self._task_changed()

    # ---- layer choices --------------------------------------------------------------------
    def _layers_of(self, kind):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, kind)]

    def _image_layers(self, _widget=None):
        return self._layers_of(napari.layers.Image)

    def _labels_layers(self, _widget=None):
        return self._layers_of(napari.layers.Labels)

    def _mask_layers(self, _widget=None):
        return [("everywhere", "everywhere"), *self._labels_layers()]

    def _boundary_sources(self, _widget=None):
        return [("strokes", "strokes"), *self._labels_layers()]

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
                           class_names=class_names, device=str(device), num_threads=threads)

    def _input_name(self) -> str | None:
        layer = {"multiclass": self.labels_choice.value,
                 "regression": self.target_choice.value}.get(self.task.value)
        return None if layer is None else layer.name

    def _training_inputs(self):
        """Copies (taken here, on the main thread) of what the task learns from:
        ``(labels, keyword arguments for iter_train, class names)``. The worker never sees the
        layers themselves, so training can never change them."""
        task = self.task.value
        kwargs = {}
        if task == "multiclass":
            layer = self.labels_choice.value
            if layer is None:
                raise VoxSegError("no annotations layer: press 'New annotations' and paint a "
                                  "few strokes of each class")
            labels = np.array(layer.data, copy=True)
            names = None
        elif task == "multilabel":
            layers = list(self.multi_labels.value or [])
            if not layers:
                raise VoxSegError("no annotation layers chosen: a multi-label task needs one "
                                  "layer per class (press 'New annotations' once per class)")
            labels = [np.array(layer.data, copy=True) for layer in layers]
            names = [_class_name(layer.name, self.image_choice.value) for layer in layers]
        else:
            target = self.target_choice.value
            if target is None:
                raise VoxSegError("no target layer: open the float image to learn (e.g. a "
                                  "distance map) as an Image layer")
            labels = np.array(target.data, copy=True)
            mask = self.mask_choice.value
            kwargs["mask"] = None if mask in (None, "everywhere") else np.array(mask.data,
                                                                             copy=True)
            names = [target.name]
        boundary = self.loss.value and resolve_loss(self.loss.value, task) == "boundary_ce"
        if boundary and self.boundary_choice.value not in (None, "strokes"):
            kwargs["boundary_reference"] = np.array(self.boundary_choice.value.data, copy=True)
        return labels, kwargs, names

    def train(self) -> None:
        """Train on the chosen image and annotations in a background worker."""
        if self.running:
            return
        try:
            image_layer = self.image_choice.value
            if image_layer is None:
                raise VoxSegError("no image layer: open a volume first")
            image = check_image(image_layer.data, name=image_layer.name)
            labels, kwargs, names = self._training_inputs()
            device = resolve_device(self.device.value)
            config = self._form_config(device, class_names=names).checked()
            # The checks training will make, made now so that a mistake is told at once.
            target = prepare_target(config.task, labels, image.shape[1:], names=names,
                                    num_classes=config.num_classes, mask=kwargs.get("mask"),
                                    name=self._input_name())
            class_weights(config.class_weights, target.data, target.num_outputs,
                          task=config.task)
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return
        scale, _ = _spatial(image_layer)
        self._start(_train_job, image, labels, config, tuple(scale), self._stop,
                    target=image_layer, **kwargs)

    def predict(self) -> None:
        """Predict the chosen image with the current model, in a background worker."""
        if self.running:
            return
        try:
            if self.model is None:
                raise VoxSegError("no model yet: train one or press 'Load model...'")
            image_layer = self.image_choice.value
            if image_layer is None:
                raise VoxSegError("no image layer: open a volume first")
            image = check_image(image_layer.data, name=image_layer.name,
                                channels=self.model.config["architecture"]["in_channels"])
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return
        self._start(_predict_job, self.model, image, self._stop, target=image_layer)

    def stop(self) -> None:
        """Stop training after the current step; the best model so far is kept and applied."""
        if self.running:
            self._stop.set()
            self.status.value = "stopping..."

    def _start(self, job, *args, target, **kwargs) -> None:
        self._stop.clear()
        self._target = target
        self.progress.value = 0
        self.train_button.enabled = self.predict_button.enabled = False
        self.load_button.enabled = False
        self.stop_button.enabled = True
        self._worker = create_worker(
            job, *args, **kwargs, _start_thread=False, _ignore_errors=True,
            _connect={"yielded": self._on_event, "returned": self._on_returned,
                      "errored": self._on_error, "finished": self._on_finished},
        )
        self._worker.start()

    # ---- worker handlers (main thread) ----------------------------------------------------
    def _on_event(self, event) -> None:
        if isinstance(event, TrainEvent):
            self.progress.value = int(100 * event.step / event.total)
            self.status.value = (f"step {event.step}/{event.total}  loss "
                                 f"{event.smoothed_loss:.4f}  {event.elapsed:.0f} s")
        elif isinstance(event, PredictEvent):
            self.progress.value = int(100 * event.done / event.total)
            self.status.value = f"predicting {event.done}/{event.total} tiles"

    def _on_returned(self, value) -> None:
        result, prediction = value
        if result is not None:
            if result.warning:
                show_warning(f"{result.warning}; kept the best model so far (step "
                             f"{result.best_step})")
            self.model = result.model
            self.model_info.value = (f"trained {result.steps} steps, best loss "
                                     f"{result.best_loss:.4f}")
        if prediction.output is None:
            self.status.value = "prediction cancelled"
            return
        self.show_result(self._target, prediction)
        self.status.value = ("stopped; " if result is not None and result.stopped else "") + \
            "prediction updated"

    def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, VoxSegError):
            self._notify_error(str(exc))
        else:
            self._notify_error(f"VoxSeg failed ({type(exc).__name__}: {exc}); the layers are "
                               "unchanged, please report this with the steps that led to it")

    def _on_finished(self) -> None:
        self._worker = None
        self._target = None
        self.train_button.enabled = self.predict_button.enabled = True
        self.load_button.enabled = True
        self.stop_button.enabled = False

    def show_result(self, image_layer, prediction) -> list:
        """Show a PredictResult: one Labels layer '<image> prediction' (multi-class), one per
        class '<image> prediction: <class>' (multi-label, 1 = absent, 2 = present) or an Image
        layer '<image> prediction' (regression). Returns the layers."""
        if prediction.task == "regression":
            return [self.show_prediction(image_layer, prediction.values, kind="image")]
        if prediction.task == "multilabel":
            names = [c.get("name", f"class {i + 1}")
                     for i, c in enumerate(self.model.config["classes"])]
            layers = []
            for i, (name, labels) in enumerate(zip(names, prediction.labels)):
                layer = self.show_prediction(image_layer, labels, suffix=f": {name}")
                layer.colormap = multilabel_colormap(i, True)
                layers.append(layer)
            return layers
        return [self.show_prediction(image_layer, prediction.labels)]

    def show_prediction(self, image_layer, data: np.ndarray, *, kind: str = "labels",
                        suffix: str = ""):
        """Show ``data`` as the layer '<image> prediction<suffix>', updated in place if a layer
        of that name, kind and shape is there (so its place in the layer list and its display
        settings stay), else added with the image's scale and translation."""
        name = f"{image_layer.name} prediction{suffix}"
        scale, translate = _spatial(image_layer)
        cls = napari.layers.Labels if kind == "labels" else napari.layers.Image
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if type(layer) is cls and layer.data.shape == data.shape \
                    and layer.data.dtype == data.dtype:
                layer.data[...] = data
                if kind == "image":
                    layer.reset_contrast_limits()
                layer.refresh()
                return layer
            self.viewer.layers.remove(layer)
        if kind == "image":
            return self.viewer.add_image(data, name=name, scale=scale, translate=translate,
                                         colormap="viridis", blending="additive", opacity=0.7)
        return self.viewer.add_labels(data, name=name, scale=scale, translate=translate,
                                      opacity=0.5)

    # ---- models ---------------------------------------------------------------------------
    def save_model(self, path) -> Path | None:
        try:
            if self.model is None:
                raise VoxSegError("no model to save: train one first")
            saved = save_model(self.model, path)
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
        names = ", ".join(c.get("name", "?") for c in model.config["classes"])
        task = model.config.get("task", "multiclass")
        self.model_info.value = f"{Path(path).name} ({task}): {names}"
        self.task.value = task
        if task == "multiclass":
            self.classes.value = model.config["architecture"]["num_classes"]
        loss = model.config.get("loss", {}).get("name")
        if loss in losses_for(task):
            self.loss.value = loss
        show_info(f"model loaded from {path}")
        return model

    def _save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.native, "Save model as folder", "voxseg-model")
        if path:
            self.save_model(path)

    def _load_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self.native, "Load model folder")
        if path:
            self.load_model(path)
