"""Reading the form into a run: a checked TrainConfig and copies of what the run reads.

Nothing here touches a whole volume on the main thread when Train is pressed: the image as
float32 and the strokes are read by the worker as it starts (:class:`Later`), the strokes from
a :class:`~.painting.LiveStrokes` that the worker's own copies of the layers follow, so that a
run can never change a layer. The checks that need no voxel (shapes, channels, the settings)
and those the stroke tallies answer (which classes are painted, the class weights) are made
here, so that a mistake is told at once; the rest (NaN voxels, say) when the worker reads.
Nothing here notifies: a mistake is a :class:`VoxSegError`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from ..core import TrainConfig, VoxSegError, check_image, resolve_device
from ..core.card import image_channels
from ..core.data import check_image_layout
from ..core.infer import voxel_mismatch
from ..core.live_strokes import stroke_summary
from ..core.losses import resolve_loss
from ..core.tasks import task_info, task_of
from ..core.train import FINE_TUNE_LR_FACTOR, fine_tune_config, plan_config
from .form import Form
from .painting import SYNC_COUNT_VOXELS, LiveStrokes
from .results import spatial
from .series import is_series


class Later:
    """A value the worker reads as it starts (``get()``): a copy of a layer, the image as
    float32. ``read`` must not touch a widget (it runs in the worker thread)."""

    def __init__(self, read):
        self.read = read

    def get(self):
        return self.read()


def resolve(value):
    """(Worker) ``value``, read now if it is a :class:`Later`."""
    return value.get() if isinstance(value, Later) else value


@dataclass
class Inputs:
    """What a training run learns from, read by the worker as it starts."""

    labels: object  # Later: the strokes (or the regression target), as the core takes them
    kwargs: dict  # more for iter_train (mask, boundary_reference, model, resume); Later or not
    names: list | None  # class names
    layers: list  # every layer read besides the image: removing one stops the run
    live: LiveStrokes | None  # the strokes (regression: the mask) that follow the painting
    stroke_layers: list = field(default_factory=list)  # the layers of strokes (not regression)


@dataclass
class TrainingRun:
    """A training run, read from the form and checked: ready to start."""

    image_layer: object
    image: Later  # (C, Z, Y, X) float32, the image and its extra channels
    shape: tuple  # the image's (C, Z, Y, X) shape
    inputs: Inputs
    config: TrainConfig
    patch: tuple = ()  # the training patch (the live previews' tile)
    first_step: int = 0  # a continued run goes on from here
    layers: list = field(default_factory=list)  # every layer the run reads

    @property
    def voxel_size(self) -> tuple:
        return tuple(spatial(self.image_layer)[0])


@dataclass
class PredictionRun:
    """A prediction, read from the form and checked: ready to start."""

    image_layer: object
    image: object  # (C, Z, Y, X) float32 in memory, or the lazy data (``blocks``)
    voxel_size: tuple
    resample: bool
    lazy: bool  # the layer's data is lazy (dask, zarr...)
    blocks: bool  # predicted block by block into zarr stores, never loaded whole
    outputs: dict  # probabilities / uncertainty
    layers: list  # every layer the run reads


def input_image(form: Form, image_layer, channels: int | None = None) -> np.ndarray:
    """The image and the chosen extra channels, as one float32 (C, Z, Y, X) array, read now.
    ``channels``: the count a model takes (checked, with advice)."""
    return np.asarray(image_reader(form, image_layer, channels)[0].get(), dtype=np.float32)


def image_reader(form: Form, image_layer, channels: int | None = None, *,
                 alone: bool = False) -> tuple[Later, tuple]:
    """The image and the chosen extra channels (none when ``alone``), read later (by the
    worker), and their (C, Z, Y, X) shape, checked now (shapes and channel counts: no voxel
    is read)."""
    extra = [] if alone else [layer for layer in (form.channels.value or [])
                              if layer is not image_layer]
    layers = [image_layer, *extra]
    shapes = [check_image_layout(layer.data, name=layer.name) for layer in layers]
    for layer, shape in zip(extra, shapes[1:]):
        if shape[1:] != shapes[0][1:]:
            raise VoxSegError(f"channel layer {layer.name} has shape {shape[1:]}, not "
                              f"the image's {shapes[0][1:]}; choose layers of the "
                              "same shape under 'More channels'")
    count = sum(shape[0] for shape in shapes)
    if channels is not None and count != channels:
        raise VoxSegError(f"the model takes {channels} channel(s) but {image_layer.name}"
                          f"{' with the chosen channels' if extra else ''} has "
                          f"{count}; choose {channels} channel(s) in all (the "
                          "image plus 'More channels')")
    sources = [(layer.data, layer.name) for layer in layers]

    def read():  # (C, Z, Y, X); floats checked here (NaN...), to name the layer in a refusal
        parts = [check_image(data, name=name) if np.dtype(data.dtype).kind == "f" else
                 np.asarray(data).reshape(shape) for (data, name), shape in zip(sources, shapes)]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([part.astype(np.float32, copy=False) for part in parts])

    return Later(read), (count, *shapes[0][1:])


def extra_outputs(form: Form, task: str) -> dict:
    """Probabilities / uncertainty, as asked for in the form (not for regression)."""
    if task == "regression":
        return {"probabilities": False, "uncertainty": False}
    return {"probabilities": bool(form.want_probabilities.value),
            "uncertainty": bool(form.want_uncertainty.value)}


def objects_wish(form: Form, voxel_size) -> dict | None:
    """``Objects of classes`` as ticked in the form (read on the main thread), or None."""
    if not form.want_objects.value:
        return None
    return {"text": form.object_classes.value.strip(), "voxel_size": voxel_size}


def objects_request(wish: dict | None, config: dict) -> dict | None:
    """What instance labels to make of a model's prediction (:func:`objects_wish`): the
    classes named (by default every class but the first; multi-label: every class)."""
    if wish is None or task_of(config) == "regression":
        return None
    from ..core.objects import object_classes

    count = int(config["architecture"]["num_classes"])
    first = 1 if task_of(config) == "multilabel" else 2
    text = wish["text"] or ",".join(str(c) for c in range(first, count + 1))
    return {"classes": object_classes(text, config), "voxel_size": wish["voxel_size"],
            "num_classes": count}


def _class_name(layer_name: str, image_layer) -> str:
    """'scan nuclei' -> 'nuclei' when the image is 'scan': the class, without the image's name."""
    prefix = f"{image_layer.name} " if image_layer is not None else ""
    rest = layer_name[len(prefix):].strip() if layer_name.startswith(prefix) else ""
    return rest or layer_name


def _copy(layer) -> Later:
    data = layer.data
    return Later(lambda: np.array(data, copy=True))


def training_inputs(form: Form) -> Inputs:
    """What the task learns from, for the worker to read (nothing is copied now)."""
    task = form.task.value
    kwargs, names = {}, None
    if task in ("multiclass", "multilabel"):
        if task == "multiclass":
            layers = [form.labels_choice.value] if form.labels_choice.value is not None else []
            if not layers:
                raise VoxSegError("no annotations layer: press 'New annotations' and paint a "
                                  "few strokes of each class")
            class_list = getattr(form, "class_list", None)  # the names the user gave
            names = class_list.names() if class_list is not None else None
        else:
            layers = list(form.multi_labels.value or [])
            if not layers:
                raise VoxSegError("no annotation layers chosen: a multi-label task needs one "
                                  "layer per class (press 'New annotations' once per class)")
            names = [_class_name(layer.name, form.image_choice.value) for layer in layers]
        live = LiveStrokes(layers, as_list=task == "multilabel")
        labels, strokes = Later(live.take), list(layers)
    else:
        target = form.target_choice.value
        if target is None:
            raise VoxSegError("no target layer: open the float image to learn (e.g. a "
                              "distance map) as an Image layer")
        mask = form.mask_choice.value
        mask = None if mask in (None, "everywhere") else mask
        layers = [target] if mask is None else [target, mask]
        names = [target.name]
        live = None if mask is None else LiveStrokes([mask])  # what changes: the mask
        if live is not None:
            kwargs["mask"] = Later(live.take)
        labels, strokes = _copy(target), []
    boundary = form.loss.value and resolve_loss(form.loss.value, task) == "boundary_ce"
    if boundary and form.boundary_choice.value not in (None, "strokes"):
        kwargs["boundary_reference"] = _copy(form.boundary_choice.value)
        layers.append(form.boundary_choice.value)
    return Inputs(labels, kwargs, names, layers, live, strokes)


def check_strokes(form: Form, inputs: Inputs, spatial_shape: tuple, config) -> None:
    """The checks training makes of the strokes that need no voxel read: their shapes, and,
    from the form's stroke tallies (when counted), the classes painted and the weights."""
    for layer in inputs.stroke_layers:
        if tuple(layer.data.shape) != tuple(spatial_shape):
            raise VoxSegError(f"{layer.name} has shape {tuple(layer.data.shape)} but the "
                              f"image has shape {tuple(spatial_shape)}; paint on a Labels "
                              "layer made for this image ('New annotations')")
    if not inputs.stroke_layers:
        return
    tallies = form.tallies
    tallies.watch(form.annotation_layers())
    if max(layer.data.size for layer in inputs.stroke_layers) <= SYNC_COUNT_VOXELS:
        tallies.settle()
    counted = [tallies.tally(layer) for layer in inputs.stroke_layers]
    if not tallies.fresh or any(t is None for t in counted):
        return  # a count is under way: the worker checks as it reads the strokes
    names = ([_input_name(form)] if config.task == "multiclass" else
             inputs.names or [layer.name for layer in inputs.stroke_layers])
    stroke_summary(config.task, counted, names, num_classes=config.num_classes,
                   weights=config.class_weights)


def learning_rate(form: Form) -> float:
    text = str(form.learning_rate.value).strip()
    try:
        return float(text)
    except ValueError:
        raise VoxSegError(f"learning rate {text!r} is not a number; type one like 0.003") \
            from None


def train_config(form: Form, device, class_names=None) -> TrainConfig:
    """The TrainConfig the form describes (not yet checked; the learning rate is not set)."""
    threads = max(1, (os.cpu_count() or 2) - 1) if device.type == "cpu" else None
    task = form.task.value
    return TrainConfig(iterations=int(form.iterations.value), task=task,
                       loss=form.loss.value, focal_gamma=float(form.focal_gamma.value),
                       class_weights=form.weights.value if task_info(task).has_classes else "none",
                       num_classes=(int(form.classes.value) or None)
                       if task == "multiclass" else None,
                       class_names=class_names, device=str(device), num_threads=threads,
                       network=form.network.value,
                       two_stage=None if form.two_stage.value else False)


def _input_name(form: Form) -> str | None:
    layer = {"multiclass": form.labels_choice.value,
             "regression": form.target_choice.value}.get(form.task.value)
    return None if layer is None else layer.name


def _image_layer(form: Form, training: bool = False):
    layer = form.image_choice.value
    if layer is None:
        raise VoxSegError("no image layer: open a volume first")
    if training and is_series(layer):
        raise VoxSegError(f"{layer.name} is a time series; train on one time point (e.g. "
                          "copy it to a layer of its own: layer.data[t]), then predict the "
                          "series")
    return layer


def _ready(form: Form, run: TrainingRun, model) -> TrainingRun:
    """Add the preview tile and the layers read (the patch the core will train on)."""
    architecture = None if model is None else model.config["architecture"]
    run.patch = plan_config(run.config, run.shape[1:], run.voxel_size,
                            architecture=architecture)[0].patch_size
    run.layers = [run.image_layer, *(form.channels.value or []), *run.inputs.layers]
    return run


def training_run(form: Form, model=None, *, fine_tune: bool = False) -> TrainingRun:
    """A new network (or, ``fine_tune``, ``model`` further, at a lower learning rate)."""
    if fine_tune and model is None:
        raise VoxSegError("no model to fine-tune: train one or press 'Load model...'")
    model_task = task_of(model.config) if fine_tune else None
    if fine_tune and model_task != form.task.value:
        raise VoxSegError(f"the model does a {model_task} task, not {form.task.value}; "
                          f"set Task to {model_task}, or press Train for a new model")
    image_layer = _image_layer(form, training=True)
    channels = image_channels(model.config) if fine_tune else None
    image, shape = image_reader(form, image_layer, channels)
    inputs = training_inputs(form)
    config = train_config(form, resolve_device(form.device.value), class_names=inputs.names)
    config.learning_rate = learning_rate(form)
    if fine_tune:  # what fine-tuning means is the core's: the model's network, patch, ...
        config = fine_tune_config(model, **{**dataclasses.asdict(config), "learning_rate":
                                            config.learning_rate * FINE_TUNE_LR_FACTOR})
    config = config.checked()
    check_strokes(form, inputs, shape[1:], config)
    _with_training_set(form, image_layer, inputs)
    if fine_tune:  # a copy: the model in use stays whole (and can be saved) while this trains
        inputs.kwargs["model"] = copy.deepcopy(model)
    run = TrainingRun(image_layer, image, shape, inputs, config)
    return _ready(form, run, inputs.kwargs.get("model"))


def _with_training_set(form: Form, image_layer, inputs: Inputs) -> None:
    """The other pairs of the training set (``form.training_set``), if any, for the worker:
    the run's live strokes then follow every pair's annotations (a list, the chosen first)."""
    training_set = getattr(form, "training_set", None)
    if training_set is None:
        return
    others = training_set.others(image_layer, form.labels_choice.value)
    if others:
        chosen = form.labels_choice.value
        live = LiveStrokes([chosen, *(labels for _, labels, _ in others)], as_list=True)
        inputs.kwargs["pairs"] = [(image, voxel) for image, _, voxel in others]
        inputs.labels, inputs.live = Later(live.take), live
        inputs.layers = [*inputs.layers, *(layer for pair in training_set.pairs
                                           for layer in pair)]


def continued_run(form: Form, model, resume) -> TrainingRun:
    """The last stopped run (``resume``) from where it stopped, with the current strokes."""
    if resume is None or model is None:
        raise VoxSegError("nothing to continue: Continue goes on with a run you "
                          "stopped; press Train or Fine-tune")
    image_layer = _image_layer(form, training=True)
    if form.task.value != resume.config.task:
        raise VoxSegError(f"the stopped run was a {resume.config.task} task; set Task "
                          f"back to {resume.config.task}, or press Train for a new one")
    image, shape = image_reader(form, image_layer, image_channels(model.config))
    inputs = training_inputs(form)
    check_strokes(form, inputs, shape[1:], resume.config)
    inputs.kwargs.update(model=copy.deepcopy(model), resume=resume)
    run = TrainingRun(image_layer, image, shape, inputs, resume.config, first_step=resume.step)
    return _ready(form, run, inputs.kwargs["model"])


def prediction_run(form: Form, model) -> PredictionRun:
    """The chosen image with ``model``: in memory, or (a lazy image with no extra channels)
    block by block, never loaded whole."""
    if model is None:
        raise VoxSegError("no model yet: train one or press 'Load model...'")
    image_layer = _image_layer(form)
    voxel_size = tuple(float(v) for v in image_layer.scale[-3:])
    outputs = {**extra_outputs(form, task_of(model.config)),
               "objects": objects_request(objects_wish(form, voxel_size), model.config)}
    voxel = tuple(float(v) for v in image_layer.scale[-3:])
    resample = bool(form.resample.value)
    data = image_layer.data[0] if image_layer.multiscale else image_layer.data
    lazy = not isinstance(data, np.ndarray)
    if lazy and resample and voxel_mismatch(model, voxel):
        raise VoxSegError("resampling works on images in memory, and this one is "
                          "lazy (zarr/dask); untick Resample, or resample the volume "
                          "first")
    if lazy and not form.channels.value:  # dask, zarr...: never loaded whole
        return PredictionRun(image_layer, data, voxel, resample, lazy, True, outputs,
                             [image_layer])
    image = input_image(form, image_layer, image_channels(model.config))
    return PredictionRun(image_layer, image, voxel, resample, lazy, False, outputs,
                         [image_layer, *(form.channels.value or [])])
