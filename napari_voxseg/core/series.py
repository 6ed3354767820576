"""Time series: a (T, Z, Y, X) or (T, C, Z, Y, X) image predicted frame by frame into results
with the time axis first.

    result = run_to_end(iter_predict_series(model, frames))   # result.labels (T, Z, Y, X)
    frames, voxel, _ = read_series("movie.ome.tif")            # the file says which axis is T
    frames, voxel, _ = read_series("movie.npy", time_axis=0)   # or say it

Each frame is one call of :func:`~.infer.iter_predict`, so memory holds one frame's tiles and
probabilities at a time besides the stacked results.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

from .errors import VoxSegError
from .infer import PredictResult, iter_predict


@dataclass
class SeriesEvent:
    frame: int  # 0-based, the frame being predicted
    frames: int
    done: int  # tiles done in this frame
    total: int


def read_series(path, time_axis: int | None = None, channel_axis: int | None = None
                ) -> tuple[np.ndarray, tuple | None, bool]:
    """A file's frames, time first: (T, Z, Y, X) or (T, C, Z, Y, X), and the voxel size.
    The time axis is the one the file marks (OME-TIFF, ImageJ TIFF, 4D NIfTI), else
    ``time_axis`` (an axis of the array as stored); ``channel_axis`` likewise for a 5D array
    whose file does not say (counted after the time axis is moved first). The last value
    says whether it is a series: a file that marks no time axis, read with no ``time_axis``,
    is one volume ((Z, Y, X) or (C, Z, Y, X), as :func:`~.files.read_volume_info` gives)."""
    from .files import read_volume_info

    array, info = read_volume_info(path, time=True)
    if info.get("time_axis") is None:
        if time_axis is None:
            return array, info.get("voxel_size"), False
        if not -array.ndim <= time_axis < array.ndim or array.ndim not in (4, 5):
            raise VoxSegError(f"--time-axis {time_axis}: {_name(path)} has shape {array.shape}; "
                              "give the axis (0 to 3, or 0 to 4 with channels) of a 4D or 5D "
                              "array that holds the time points")
        array = np.moveaxis(array, time_axis, 0)
        if array.ndim == 5 and channel_axis is not None:
            array = np.moveaxis(array, channel_axis, 1)
    if array.ndim not in (4, 5):
        raise VoxSegError(f"{_name(path)}: a time series is (T, Z, Y, X) or (T, C, Z, Y, X); "
                          f"this one is {array.shape}")
    return array, info.get("voxel_size"), True


def _name(path) -> str:
    from pathlib import Path

    return Path(path).name


def iter_predict_series(model, frames, *, should_stop: Callable[[], bool] | None = None,
                        **kwargs) -> Generator[SeriesEvent, None, PredictResult]:
    """Predict each frame of ``frames`` (T, [C,] Z, Y, X) with :func:`~.infer.iter_predict`
    (``kwargs`` go to it); return a :class:`~.infer.PredictResult` whose arrays have the
    time axis first: labels (T, Z, Y, X) (multi-label (T, K, Z, Y, X)), probabilities
    (T, K, Z, Y, X), uncertainty (T, Z, Y, X)."""
    count = len(frames)
    if count == 0:
        raise VoxSegError("the time series has no frames")
    parts: list[PredictResult] = []
    for t in range(count):
        inner = iter_predict(model, np.asarray(frames[t]), should_stop=should_stop, **kwargs)
        while True:
            try:
                event = next(inner)
            except StopIteration as stop:
                result = stop.value
                break
            yield SeriesEvent(t, count, event.done, event.total)
        if result.cancelled:
            return PredictResult(None, cancelled=True, task=result.task)
        parts.append(result)

    def stack(name):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else np.stack(values)

    return PredictResult(stack("labels"), probabilities=stack("probabilities"),
                         values=stack("values"), task=parts[0].task,
                         uncertainty=stack("uncertainty"))

