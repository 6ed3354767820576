"""Checks and normalization of images (labels and class weights: :mod:`.targets`).

Conventions (see docs/architecture.md): images are float32 ``(C, Z, Y, X)``.
"""

from __future__ import annotations

import numpy as np

from .errors import VoxSegError

# Percentiles used to map intensities to roughly [0, 1]; robust to a few hot or dead voxels.
DEFAULT_PERCENTILES = (1.0, 99.8)
# Above this many voxels, percentiles are estimated on a strided subsample.
_PERCENTILE_SAMPLE = 2_000_000


def _describe(array) -> str:
    return f"shape {tuple(array.shape)}, dtype {array.dtype}"


def check_image(image, *, name: str = "image", channels: int | None = None,
                keep_integers: bool = False) -> np.ndarray:
    """Return ``image`` as float32 ``(C, Z, Y, X)`` or raise :class:`VoxSegError`.

    A ``(Z, Y, X)`` array gets a channel axis of length 1. ``channels``, when given, is the channel
    count a model expects. ``keep_integers``: an integer image is returned as it is (a view
    with the channel axis), for a reader that converts block by block (no float32 copy of a
    large volume; the values are the same).
    """
    check_image_layout(image, name=name, channels=channels)
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[np.newaxis]
    integers = array.dtype.kind in "biu"
    if integers and keep_integers and array.dtype.kind != "b":
        return array
    array = array.astype(np.float32, copy=False)
    if integers:  # nothing to look for
        return array
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise VoxSegError(
            f"{name} has {bad} NaN or infinite voxel(s); replace them first "
            "(e.g. np.nan_to_num(image)) or crop them away"
        )
    return array


def check_image_layout(image, *, name: str = "image", channels: int | None = None
                       ) -> tuple[int, ...]:
    """The ``(C, Z, Y, X)`` shape ``image`` (anything with a dtype and a shape) would have
    as :func:`check_image` returns it, checked without reading a voxel (the finiteness of
    the voxels is not)."""
    array = image if hasattr(image, "dtype") and hasattr(image, "shape") else np.asarray(image)
    if np.dtype(array.dtype).kind not in "biuf":
        raise VoxSegError(
            f"{name} has dtype {array.dtype}, not numbers; load a grey-level volume "
            "(integers or floats)"
        )
    shape = tuple(int(n) for n in array.shape)
    ndim = len(shape)
    if ndim == 3:
        shape = (1, *shape)
    elif ndim == 4:
        if channels is None and shape[0] > 16:
            raise VoxSegError(
                f"{name} is 4D ({_describe(array)}) with {shape[0]} channels on the first "
                "axis; voxseg takes (Z, Y, X) or (C, Z, Y, X) with the channels first: "
                "move the channel axis first (np.moveaxis) or select one channel"
            )
    elif ndim < 3:
        raise VoxSegError(
            f"{name} is {ndim}D ({_describe(array)}); voxseg segments 3D volumes (Z, Y, X): "
            "open a stack of slices, or add a Z axis of length 1 (array[np.newaxis])"
        )
    else:
        raise VoxSegError(
            f"{name} is {ndim}D ({_describe(array)}); voxseg takes (Z, Y, X) or "
            "(C, Z, Y, X): select one time point or drop the extra axes"
        )
    if 0 in shape:
        raise VoxSegError(f"{name} is empty ({_describe(array)}); open a volume with voxels in it")
    if channels is not None and shape[0] != channels:
        raise VoxSegError(
            f"{name} has {shape[0]} channel(s) but the model was trained on {channels}; "
            f"give an image with {channels} channel(s) first, as (C, Z, Y, X)"
        )
    return shape


def percentiles(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per-channel ``(low, high)`` percentiles of a ``(C, Z, Y, X)`` image, shape (C, 2)."""
    out = np.empty((image.shape[0], 2), dtype=np.float64)
    for c, channel in enumerate(image):
        flat = channel.ravel()
        if flat.size > _PERCENTILE_SAMPLE:
            flat = flat[:: flat.size // _PERCENTILE_SAMPLE + 1]
        out[c] = np.percentile(flat, [low, high])
    return out


def normalize(image: np.ndarray, low: float = DEFAULT_PERCENTILES[0],
              high: float = DEFAULT_PERCENTILES[1]) -> np.ndarray:
    """Map each channel of a float32 ``(C, Z, Y, X)`` image so its percentiles go to 0 and 1."""
    return normalize_with(image, percentiles(image, low, high))


def normalize_with(block: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Map each channel of a ``(C, Z, Y, X)`` block so that ``bounds[c]`` (low, high) go to 0
    and 1 (bounds from :func:`percentiles`, perhaps of a larger volume)."""
    out = np.empty(block.shape, dtype=np.float32)
    for c, (lo, hi) in enumerate(bounds):
        scale = hi - lo if hi > lo else 1.0
        np.subtract(block[c].astype(np.float32, copy=False), np.float32(lo), out=out[c])
        out[c] *= np.float32(1.0 / scale)
    return out
