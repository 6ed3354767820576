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
from magicgui.widgets import ComboBox, Container, Label, LineEdit, ProgressBar, PushButton, SpinBox
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog

from ..core import (
    PredictEvent,
    TrainConfig,
    TrainEvent,
    VoxSegError,
    check_image,
    check_labels,
    class_weights,
    iter_predict,
    iter_train,
    load_model,
    resolve_device,
    save_model,
)
from ..core.device import DEVICES


def _train_job(image, labels, config, voxel_size, stop: threading.Event, model=None):
    """Worker body: train, then predict the whole volume. Yields core events."""
    result = yield from iter_train(image, labels, config, model=model, voxel_size=voxel_size,
                                   should_stop=stop.is_set)
    prediction = yield from iter_predict(result.model, image)
    return result, prediction


def _predict_job(model, image, stop: threading.Event):
    prediction = yield from iter_predict(model, image, should_stop=stop.is_set)
    return None, prediction


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
        self.labels_choice = ComboBox(label="Annotations", choices=self._labels_layers)
        self.new_labels_button = PushButton(text="New annotations")
        self.classes = SpinBox(label="Classes", value=0, min=0, max=255,
                               tooltip="Number of classes; 0 = the largest class id painted")
        self.weights = LineEdit(label="Class weights", value="none",
                                tooltip="none, auto (inverse stroke frequency) or w1,w2,...")
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
            self.image_choice, self.labels_choice, self.new_labels_button, self.classes,
            self.weights, self.iterations, self.device, self.train_button, self.stop_button,
            self.progress, self.status, self.predict_button, self.save_button, self.load_button,
            self.model_info,
        ])

        self.new_labels_button.changed.connect(self.new_annotations)
        self.train_button.changed.connect(self.train)
        self.stop_button.changed.connect(self.stop)
        self.predict_button.changed.connect(self.predict)
        self.save_button.changed.connect(self._save_clicked)
        self.load_button.changed.connect(self._load_clicked)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.reset_choices)
        self.reset_choices()

    # ---- layer choices --------------------------------------------------------------------
    def _layers_of(self, kind):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, kind)]

    def _image_layers(self, _widget=None):
        return self._layers_of(napari.layers.Image)

    def _labels_layers(self, _widget=None):
        return self._layers_of(napari.layers.Labels)

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
        layer = self.viewer.add_labels(np.zeros(shape, dtype=np.uint8),
                                       name=f"{image_layer.name} annotations",
                                       scale=scale, translate=translate)
        layer.mode = "paint"
        layer.selected_label = 1
        self.labels_choice.value = layer
        return layer

    def _form_config(self, device) -> TrainConfig:
        threads = max(1, (os.cpu_count() or 2) - 1) if device.type == "cpu" else None
        return TrainConfig(iterations=int(self.iterations.value),
                           class_weights=self.weights.value,
                           num_classes=int(self.classes.value) or None,
                           device=str(device), num_threads=threads)

    def train(self) -> None:
        """Train on the chosen image and annotations in a background worker."""
        if self.running:
            return
        try:
            image_layer = self.image_choice.value
            labels_layer = self.labels_choice.value
            if image_layer is None:
                raise VoxSegError("no image layer: open a volume first")
            if labels_layer is None:
                raise VoxSegError("no annotations layer: press 'New annotations' and paint a "
                                  "few strokes of each class")
            image = check_image(image_layer.data, name=image_layer.name)
            # A copy taken on the main thread: training never sees (or touches) the layer itself.
            labels = np.array(labels_layer.data, copy=True)
            labels, k = check_labels(labels, image.shape[1:], name=labels_layer.name,
                                     num_classes=int(self.classes.value) or None)
            class_weights(self.weights.value, labels, k)
            device = resolve_device(self.device.value)
            config = self._form_config(device)
            config.checked()
        except VoxSegError as exc:
            self._notify_error(str(exc))
            return
        scale, _ = _spatial(image_layer)
        self._start(_train_job, image, labels, config, tuple(scale), self._stop,
                    target=image_layer)

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

    def _start(self, job, *args, target) -> None:
        self._stop.clear()
        self._target = target
        self.progress.value = 0
        self.train_button.enabled = self.predict_button.enabled = False
        self.load_button.enabled = False
        self.stop_button.enabled = True
        self._worker = create_worker(
            job, *args, _start_thread=False, _ignore_errors=True,
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
            self.model = result.model
            self.model_info.value = (f"trained {result.steps} steps, best loss "
                                     f"{result.best_loss:.4f}")
        if prediction.labels is None:
            self.status.value = "prediction cancelled"
            return
        self.show_prediction(self._target, prediction.labels)
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

    def show_prediction(self, image_layer, labels: np.ndarray) -> napari.layers.Labels:
        """Show labels as the Labels layer '<image> prediction' (updated in place if present)."""
        name = f"{image_layer.name} prediction"
        scale, translate = _spatial(image_layer)
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if isinstance(layer, napari.layers.Labels) and layer.data.shape == labels.shape:
                layer.data[...] = labels
                layer.refresh()
                return layer
            self.viewer.layers.remove(layer)
        return self.viewer.add_labels(labels, name=name, scale=scale, translate=translate,
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
        self.model_info.value = f"{Path(path).name}: {names}"
        self.classes.value = model.config["architecture"]["num_classes"]
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
