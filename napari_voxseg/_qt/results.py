"""The layers that show results: predictions, probabilities, uncertainty, previews.

:class:`ResultLayers` adds a result layer placed like its image, or writes into the one already
there (so its place in the layer list and its display settings stay). It never writes into a
layer the user paints or compares with: such a layer is ``protected``.
"""

from __future__ import annotations

from contextlib import contextmanager

import napari
import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from .._napari.sample import CLASS_NAMES_KEY
from ..core import dice_per_class

# In the metadata of every result layer: not an image to predict (Predict all open images).
RESULT_KEY = "voxseg_result"
HINT_KEY = "voxseg_hint"  # a result layer that is no prediction (Paint next's region)

# Multi-label layers: 1 = absent (grey in annotations, hidden in predictions), 2 = present.
_CLASS_COLOURS = ["#ff7f0e", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#17becf"]


def result_metadata(image_layer) -> dict:
    """A result layer's metadata: marked as voxseg's, with the image's NIfTI affines (so that
    saving it as NIfTI puts it on the scan)."""
    from .._napari.reader import NIFTI_KEYS, TIME_FIRST, TIME_KEY

    source = getattr(image_layer, "metadata", None) or {}
    series = {TIME_FIRST: True} if source.get(TIME_KEY) == 0 else {}
    return {RESULT_KEY: True, **series, **{k: source[k] for k in NIFTI_KEYS if k in source}}


def multilabel_colormap(index: int, prediction: bool) -> DirectLabelColormap:
    """Class ``index``'s colours: present in the class colour, absent grey (annotations) or
    hidden (``prediction``)."""
    colour = _CLASS_COLOURS[index % len(_CLASS_COLOURS)]
    absent = "transparent" if prediction else "#808080"
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: absent,
                                           2: colour})


def spatial(layer) -> tuple[list[float], list[float]]:
    """The scale and translation of a layer's last three (Z, Y, X) axes."""
    return list(layer.scale[-3:]), list(layer.translate[-3:])


def limits(data: np.ndarray) -> tuple[float, float]:
    low, high = float(np.nanmin(data)), float(np.nanmax(data))
    return (low, high) if high > low else (low, low + 1.0)


def class_names(config: dict, count: int | None = None, fallback=None) -> list[str]:
    """Names for ``count`` outputs (default: the model's, from its ``config``): the model's
    classes, or, when their number differs (a preview of a run whose network is not the
    model), ``fallback`` (the run's); 'class N' for any without a name."""
    if count is None:
        count = config.get("architecture", {}).get("num_classes", len(fallback or []))
    names = [c.get("name", f"class {i + 1}") for i, c in enumerate(config.get("classes", []))]
    if len(names) != count and fallback is not None:
        names = list(fallback)
    names = names[:count]
    return names + [f"class {i + 1}" for i in range(len(names), count)]


def layer_class_names(layer) -> list[str]:
    """The class names stored on a Labels layer (classes 1, 2, ...), possibly none."""
    names = (getattr(layer, "metadata", None) or {}).get(CLASS_NAMES_KEY) or []
    return [str(name) for name in names]


def name_classes(layer, names: list[str]) -> None:
    """Give a multi-class Labels ``layer`` its class names: in its metadata (so that the
    class list shows them when the layer is corrected and trained on) and as its features
    (napari's status bar then says the class under the mouse)."""
    if not names or layer_class_names(layer) == list(names):
        return
    layer.metadata = {**layer.metadata, CLASS_NAMES_KEY: list(names)}
    layer.features = {"index": np.arange(len(names) + 1),
                      "class": ["none", *map(str, names)]}


def mean_dice(prediction, truth_layer, shape, region=None) -> float | None:
    """Mean Dice of a multi-class prediction (of ``region`` only, if given) of a volume of
    spatial ``shape`` against a ground-truth layer; None when there is nothing to compare
    (no ground truth, another task, another shape)."""
    if truth_layer is None or prediction.task != "multiclass" or prediction.labels is None:
        return None
    data = np.asarray(truth_layer.data)
    if data.shape[-3:] != shape:
        return None
    reference = data if region is None else data[tuple(region)]
    scores = dice_per_class(prediction.labels, reference)
    return float(np.mean(list(scores.values()))) if scores else None


class ResultLayers:
    """Adds and updates the result layers of ``viewer``. ``protected(layer)``: whether a layer
    is one the user paints or compares with; ``names(count)``: the class names to show."""

    def __init__(self, viewer, protected, names):
        self.viewer = viewer
        self.protected = protected
        self.names = names

    def show_result(self, image_layer, prediction, region=None) -> list:
        """Show a PredictResult: one Labels layer '<image> prediction' (multi-class), one per
        class '<image> prediction: <class>' (multi-label, 1 = absent, 2 = present) or an Image
        layer '<image> prediction' (regression). ``region``: the result covers only this block
        (a live preview), written into the layers in place. Returns the layers."""
        if prediction.task == "regression":
            return [self.show_prediction(image_layer, prediction.values, kind="image",
                                         region=region)]
        if prediction.task == "multilabel":
            names = self.names(len(prediction.labels))
            layers = []
            for i, (name, labels) in enumerate(zip(names, prediction.labels)):
                layer = self.show_prediction(image_layer, labels, suffix=f": {name}",
                                             region=region)
                layer.colormap = multilabel_colormap(i, True)
                layers.append(layer)
            return layers
        layer = self.show_prediction(image_layer, prediction.labels, region=region)
        name_classes(layer, self.names(None))
        return [layer]

    def show_extras(self, image_layer, probabilities, uncertainty) -> list:
        """Image layers '<image> probability: <class>' and '<image> uncertainty' (in place)."""
        layers = []
        if probabilities is not None:
            for name, p in zip(self.names(None), probabilities):
                layers.append(self.show_prediction(image_layer, p, kind="image",
                                                   suffix=f" probability: {name}"))
        if uncertainty is not None:
            layer = self.show_prediction(image_layer, uncertainty, kind="image",
                                         suffix=" uncertainty")
            layer.colormap = "magma"
            layers.append(layer)
        return layers

    def show_objects(self, image_layer, objects, classes=None) -> list:
        """Labels '<image> prediction objects' (multi-label: one per class of ``classes``,
        1-based, named '<image> prediction objects: <class>')."""
        if objects is None:
            return []
        if objects.ndim == 3:
            return [self.show_prediction(image_layer, objects, suffix=" objects")]
        names = self.names(None)
        return [self.show_prediction(image_layer, layer, suffix=f" objects: {names[c - 1]}")
                for c, layer in zip(classes, objects)]

    def show_stores(self, image_layer, stores: dict, task: str) -> list:
        """Show the zarr stores of a block-wise prediction as lazy (dask) layers, named as
        :meth:`show_result` and :meth:`show_extras` name them."""
        layers = []
        for name, data, kind in self._store_parts(image_layer, stores, task):
            if name in self.viewer.layers and not self.protected(self.viewer.layers[name]):
                self.viewer.layers.remove(name)
            layers.append(self._add_lazy(image_layer, name, data, kind, task))
        return layers

    def _store_parts(self, image_layer, stores: dict, task: str) -> list:
        """(layer name, lazy data, kind) for each layer the stores become."""
        import dask.array as da

        from ..core.zarrs import open_zarr

        names = self.names(None)
        base = f"{image_layer.name} prediction"
        parts = []
        for key, path in stores.items():
            data = da.from_zarr(open_zarr(path))  # level 0 of the OME-Zarr image
            if key == "labels" and task == "multilabel":
                parts += [(f"{base}: {n}", data[i], "labels") for i, n in enumerate(names)]
            elif key == "labels":
                parts.append((base, data, "image" if task == "regression" else "labels"))
            elif key == "objects":
                parts.append((f"{base} objects", data, "labels"))
            elif key == "probabilities":
                parts += [(f"{base} probability: {n}", data[i], "image")
                          for i, n in enumerate(names)]
            else:
                parts.append((f"{base} uncertainty", data, "image"))
        return parts

    def _add_lazy(self, image_layer, name: str, data, kind: str, task: str):
        scale, translate = spatial(image_layer)
        if kind == "labels":
            return self.viewer.add_labels(data, name=name, scale=scale, translate=translate,
                                          opacity=0.5, metadata=result_metadata(image_layer))
        return self.viewer.add_image(
            data, name=name, scale=scale, translate=translate, blending="additive",
            metadata=result_metadata(image_layer),
            colormap="magma" if name.endswith("uncertainty") else "viridis",
            contrast_limits=(0.0, 1.0) if task != "regression" else None)

    def show_prediction(self, image_layer, data: np.ndarray, *, kind: str = "labels",
                        suffix: str = "", region=None):
        """Show ``data`` as the layer '<image> prediction<suffix>', updated in place if a layer
        of that name, kind and shape is there (so its place in the layer list and its display
        settings stay), else added with the image's scale and translation. ``region``: ``data``
        is that block of the volume only; the rest of the layer stays (0 in a new one)."""
        name = f"{image_layer.name} prediction{suffix}"
        if name in self.viewer.layers and self.protected(self.viewer.layers[name]):
            # A prediction the user is now correcting as annotations is theirs: never written.
            name = f"{image_layer.name} prediction (new){suffix}"
        cls = napari.layers.Labels if kind == "labels" else napari.layers.Image
        shape = data.shape if region is None else tuple(image_layer.data.shape[-3:])
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if type(layer) is cls and layer.data.shape == shape \
                    and layer.data.dtype == data.dtype:
                layer.data[(...,) if region is None else tuple(region)] = data
                if kind == "image":
                    layer.contrast_limits = limits(layer.data)
                layer.refresh()
                return layer
            self.viewer.layers.remove(layer)
        if region is not None:
            block, data = data, np.zeros(shape, dtype=data.dtype)
            data[tuple(region)] = block
        return self._add(image_layer, name, data, kind)

    def _add(self, image_layer, name: str, data: np.ndarray, kind: str):
        """Add the layer, leaving the layer the user had selected (the brush's) selected."""
        scale, translate = spatial(image_layer)
        with self.keeping_selection():
            if kind == "image":
                return self.viewer.add_image(data, name=name, scale=scale, translate=translate,
                                             colormap="viridis", blending="additive",
                                             opacity=0.7, contrast_limits=limits(data),
                                             metadata=result_metadata(image_layer))
            return self.viewer.add_labels(data, name=name, scale=scale, translate=translate,
                                          opacity=0.5, metadata=result_metadata(image_layer))

    @contextmanager
    def keeping_selection(self):
        """Layers added within leave the layer the user had selected (the brush's) selected."""
        active = self.viewer.layers.selection.active
        try:
            yield
        finally:
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
