"""A time series in napari (an image layer whose first axis is time, as the reader marks it):
its prediction is a lazy (dask) layer of the same (T, Z, Y, X) shape, each frame predicted
when napari first shows it (moving the time slider), the last few kept."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .._napari.reader import TIME_KEY
from ..core import VoxSegError
from ..core.card import image_channels
from ..core.infer import predict
from ..core.tasks import task_of
from .results import result_metadata

KEPT_FRAMES = 8


def is_series(layer) -> bool:
    return layer is not None and layer.metadata.get(TIME_KEY) == 0 and layer.ndim == 4


def lazy_prediction(model, data):
    """(T, Z, Y, X) labels (regression: values) of the (T, Z, Y, X) ``data``, a frame at a
    time when read."""
    import dask.array as da

    task = task_of(model.config)
    if task == "multilabel":
        raise VoxSegError("a multi-label model on a time series: predict it from the command "
                          "line (predict MODEL movie.ome.tif --out pred.ome.tif)")
    if image_channels(model.config) != 1:
        raise VoxSegError("this model takes several channels; a time series in napari is "
                          "predicted with one-channel models")
    frames = data.rechunk((1, -1, -1, -1)) if isinstance(data, da.Array) else \
        da.from_array(data, chunks=(1, *data.shape[1:]))
    dtype = np.float32 if task == "regression" else np.uint8
    kept: OrderedDict = OrderedDict()

    def frame(block, block_info=None):
        t = block_info[0]["chunk-location"][0] if block_info else None
        if t in kept:
            kept.move_to_end(t)
            return kept[t]
        labels = predict(model, np.asarray(block[0], dtype=np.float32))
        assert labels is not None  # None only when a should_stop (none here) cancels
        out = labels[None].astype(dtype)
        if t is not None:
            kept[t] = out
            while len(kept) > KEPT_FRAMES:
                kept.popitem(last=False)
        return out

    return frames.map_blocks(frame, dtype=dtype)


def show_series_prediction(results, layer, model) -> object:
    """Add (or replace) '<image> prediction' for the series ``layer``, lazily; ``results``:
    the widget's :class:`~.results.ResultLayers`."""
    data = lazy_prediction(model, layer.data)
    viewer, name = results.viewer, f"{layer.name} prediction"
    if name in viewer.layers:
        if results.protected(viewer.layers[name]):
            name = f"{layer.name} prediction (new)"
        else:
            viewer.layers.remove(name)
    kwargs = dict(name=name, scale=layer.scale, translate=layer.translate,
                  metadata=result_metadata(layer))
    with results.keeping_selection():
        if task_of(model.config) == "regression":
            return viewer.add_image(data, colormap="viridis", blending="additive", **kwargs)
        return viewer.add_labels(data, opacity=0.5, **kwargs)
