"""The form: the fields a person fills in, which follow the chosen task.

:class:`Form` builds the magicgui fields (the widget lays them out and exposes each under the
same name), offers the layers that fit each field, shows only the fields the task and loss use,
and shows the class weights the current strokes give. Reading the form into a run is
:mod:`.inputs`. Nothing here notifies: a mistake is a :class:`VoxSegError`.
"""

from __future__ import annotations

from contextlib import contextmanager

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    Select,
    SpinBox,
)

from .._napari.sample import GROUND_TRUTH_KEY
from ..core import TrainConfig, VoxSegError
from ..core.device import DEVICES
from ..core.live_strokes import stroke_summary
from ..core.losses import LOSSES, losses_for, resolve_loss, weighable_losses
from ..core.tasks import task_info, task_of
from ..core.train import FINE_TUNE_LR_FACTOR
from ..core.two_stage import TASKS as STAGE1_TASKS
from .painting import Tallies
from .results import RESULT_KEY, multilabel_colormap, spatial

NETWORK_CHOICES = [("auto: 2D for thin stacks", "auto"), ("3D U-Net", "3d"),
                   ("2D U-Net, slice by slice", "2d")]
TASK_CHOICES = [("multi-class", "multiclass"), ("multi-label", "multilabel"),
                ("regression", "regression")]



def is_ground_truth(layer) -> bool:
    """Whether ``layer`` is marked as ground truth (the sample's)."""
    return bool((getattr(layer, "metadata", None) or {}).get(GROUND_TRUTH_KEY))

class Form:
    """The fields of the VoxSeg form (magicgui widgets), named as the widget exposes them."""

    # Laid out in this order above the buttons; ``outputs`` (the prediction's extra outputs)
    # goes below them.
    FIELDS = ("image_choice", "channels", "task", "labels_choice", "multi_labels",
              "target_choice", "mask_choice", "new_labels_button", "classes", "loss",
              "focal_gamma", "boundary_choice", "weights", "weights_info", "live", "iterations",
              "learning_rate", "network", "two_stage", "device", "preview_every", "ground_truth")
    OUTPUTS = ("want_probabilities", "want_uncertainty", "resample", "outputs", "want_objects",
               "object_classes", "objects")

    def __init__(self, viewer):
        self.viewer = viewer
        self._build_inputs()
        self._build_training()
        self._build_outputs()
        # Voxels per label of the annotation layers, kept from the strokes (never a recount
        # of the volume on the main thread): the class weights and stroke counts shown.
        self.tallies = Tallies(viewer)
        self.tallies.changed.connect(self.update_weights_info)
        self.task.changed.connect(self.follow_task)
        self.image_choice.changed.connect(self.channels.reset_choices)
        self.channels.native.setMaximumHeight(64)
        self.loss.changed.connect(self._show_task_widgets)
        for widget in (self.labels_choice, self.multi_labels, self.weights, self.classes):
            widget.changed.connect(self._watch_annotations)
        self._choosing, self._picked_labels = 0, None  # the annotations the user picked
        self._offered: list = []  # ground-truth layers already made the default once
        self.labels_choice.changed.connect(self._note_pick)

    @property
    def fields(self) -> list:
        return [getattr(self, name) for name in self.FIELDS]

    def _build_inputs(self) -> None:
        """What the network learns from: the image, its channels, the task and its targets."""
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

    def _build_training(self) -> None:
        """How the network learns: loss, weights, schedule, network, device, previews."""
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
        self.live = CheckBox(text="Live overlay", value=False,
                             tooltip="Before Train: as you paint, stage 1's quick forest is "
                                     "fitted again on the strokes and its prediction shown "
                                     "(the whole volume when small, else the slice in view)")
        self.two_stage = CheckBox(text="Two stages", value=True,
                                  tooltip="An instant per-voxel classifier (stage 1) fitted on "
                                          "the strokes is the first overlay; the U-Net learns "
                                          "from it and takes over only where it beats stage 1 "
                                          "on strokes held out from training. Off: the U-Net "
                                          "alone. Multi-class with ce (class weights or not) or "
                                          "boundary_ce; multi-label with bce")
        self.device = ComboBox(label="Device", choices=DEVICES, value="auto")
        self.preview_every = SpinBox(label="Preview every (s)", value=5, min=0, max=600,
                                     tooltip="While training, predict the region in view this "
                                             "often; 0 = only at the end")
        self.ground_truth = ComboBox(label="Ground truth", choices=self._truth_layers,
                                     tooltip="A Labels layer to score the live previews against "
                                             "(Dice, drawn with the loss)")

    def _build_outputs(self) -> None:
        """What a prediction shows besides the labels."""
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
        self.want_objects = CheckBox(text="Objects of classes", value=False,
                                     tooltip="Also show the objects of these classes as "
                                             "instance labels: connected components, touching "
                                             "round objects split by a seeded watershed")
        self.object_classes = LineEdit(value="", tooltip="Class numbers or names, comma-"
                                                         "separated; empty: every class but "
                                                         "the first (multi-label: every class)")
        self.objects = Container(widgets=[self.want_objects, self.object_classes],
                                 layout="horizontal", labels=False)
        self.objects.margins = (0, 0, 0, 0)

    # ---- layer choices ------------------------------------------------------------------------
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

    @contextmanager
    def choosing(self):
        """Changes of the choices within are the form's own (a reset, a default), not the
        user's picks."""
        self._choosing += 1
        try:
            yield
        finally:
            self._choosing -= 1

    def _note_pick(self, value) -> None:
        if not self._choosing:
            self._picked_labels = value

    def choose_defaults(self, _event=None) -> None:
        """After the layers change: the annotations are the selected Labels layer, else the
        most recently added one, and never by default a layer marked as ground truth (the
        sample's), which becomes the ground truth (Dice) instead when none is chosen."""
        labels = [layer for layer in self.viewer.layers
                  if isinstance(layer, napari.layers.Labels)]
        strokes = [layer for layer in labels
                   if not is_ground_truth(layer) and not layer.metadata.get(RESULT_KEY)]
        current = self.labels_choice.value
        chosen_by_us = current is not None and current is not self._picked_labels and (
            is_ground_truth(current) or current.metadata.get(RESULT_KEY))
        if strokes and (current is None or chosen_by_us):
            active = self.viewer.layers.selection.active
            with self.choosing():
                self.labels_choice.value = active if active in strokes else strokes[-1]
        truths = [layer for layer in labels if is_ground_truth(layer)]
        if truths and self.ground_truth.value is None and truths[-1] not in self._offered:
            self._offered.append(truths[-1])  # once: the user may set it back to none
            with self.choosing():
                self.ground_truth.value = truths[-1]

    def chosen_layers(self) -> list:
        """The layers chosen in the form that the user paints or compares with."""
        return [self.labels_choice.value, self.mask_choice.value, self.target_choice.value,
                self.boundary_choice.value, self.ground_truth.value,
                *(self.multi_labels.value or [])]

    def annotation_layers(self) -> list:
        """The layers of strokes for the task (none for regression)."""
        if self.task.value == "multiclass":
            return [self.labels_choice.value] if self.labels_choice.value is not None else []
        if self.task.value == "multilabel":
            return list(self.multi_labels.value or [])
        return []

    # ---- the form follows the task ------------------------------------------------------------
    def follow_task(self, _value=None) -> None:
        """Offer the losses of the task, show its fields, and watch its strokes."""
        self.loss.reset_choices()
        self._show_task_widgets()
        self._watch_annotations()

    def follow_model(self, config: dict) -> None:
        """Set the task, classes and loss to a loaded model's (its ``config``)."""
        task = task_of(config)
        self.task.value = task
        if task == "multiclass":
            self.classes.value = config["architecture"]["num_classes"]
        loss = config.get("loss", {}).get("name")
        if loss in losses_for(task):
            self.loss.value = loss

    def _show_task_widgets(self, _value=None) -> None:
        task = self.task.value
        loss = resolve_loss(self.loss.value, task) if self.loss.value else None
        self.labels_choice.visible = task == "multiclass"
        self.classes.visible = task == "multiclass"
        self.multi_labels.visible = task == "multilabel"
        self.target_choice.visible = self.mask_choice.visible = task_info(task).takes_mask
        self.weights.visible = self.weights_info.visible = task_info(task).has_classes
        self.live.visible = task in ("multiclass", "multilabel")
        self.new_labels_button.text = "New mask" if task == "regression" else "New annotations"
        self.focal_gamma.visible = loss is not None and LOSSES[loss].gamma
        self.boundary_choice.visible = loss == "boundary_ce"
        self.two_stage.visible = task in STAGE1_TASKS and loss in weighable_losses()

    def _watch_annotations(self, _value=None) -> None:
        """Show the class weights for the current strokes, and again whenever they change."""
        self.tallies.watch(self.annotation_layers() if self.task.value != "regression" else [])
        self.update_weights_info()

    def update_weights_info(self) -> str:
        """Show the class weights and stroke counts (before training), from the tallies."""
        if self.task.value == "regression":
            self.weights_info.value = ""
            return ""
        try:
            text = self._weights_text()
        except VoxSegError as exc:
            text = str(exc).split(";")[0]
        self.weights_info.value = text if len(text) < 90 else text[:87] + "..."
        self.weights_info.tooltip = text
        return text

    def _weights_text(self) -> str:
        task = self.task.value
        layers = self.annotation_layers()
        if not layers:
            raise VoxSegError("choose the annotation layer(s)")
        tallies = [self.tallies.tally(layer) for layer in layers]
        if any(t is None for t in tallies):
            return "counting the strokes..."
        weights, counts = stroke_summary(
            task, tallies, [layer.name for layer in layers], weights=self.weights.value,
            num_classes=(int(self.classes.value) or None) if task == "multiclass" else None)
        painted = ("strokes " + ", ".join(map(str, counts)) if task == "multiclass" else
                   "present/absent " + ", ".join(f"{p}/{a}" for a, p in counts))
        shown = "none" if weights is None else ", ".join(f"{w:.3g}" for w in weights)
        return f"{shown} ({painted})"

    # ---- a new annotation layer ---------------------------------------------------------------
    def new_annotations(self) -> napari.layers.Labels:
        """Add an empty Labels layer with the image's spatial shape, scale and translation,
        ready to paint, and choose it for the task."""
        image_layer = self.image_choice.value
        if image_layer is None:
            raise VoxSegError("no image layer: open a volume first (File > Open or File > "
                              "Open Sample)")
        if image_layer.data.ndim < 3:
            raise VoxSegError(f"{image_layer.name} is {image_layer.data.ndim}D; voxseg needs a "
                              "3D volume (Z, Y, X)")
        scale, translate = spatial(image_layer)
        task = self.task.value
        chosen = list(self.multi_labels.value or [])
        name = f"{image_layer.name} " + {"multiclass": "annotations", "regression": "known"}.get(
            task, f"class {len(chosen) + 1}")
        layer = self.viewer.add_labels(np.zeros(image_layer.data.shape[-3:], dtype=np.uint8),
                                       name=name, scale=scale, translate=translate)
        layer.mode = "paint"
        layer.selected_label = 1
        if task == "multiclass":
            self.labels_choice.value = layer
        elif task == "multilabel":
            layer.colormap = multilabel_colormap(len(chosen), False)
            layer.selected_label = 2  # paint where the class is; 1 where it is not
            self.multi_labels.value = [*chosen, layer]
        else:
            self.mask_choice.value = layer
        return layer
