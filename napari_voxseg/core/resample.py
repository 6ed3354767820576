"""Voxel sizes: whether an image's differs from the one a model was trained at, and
resampling a volume to another shape."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .models import model_config

# Voxel sizes that differ by less than this fraction on every axis count as the same.
VOXEL_TOLERANCE = 0.1


def _voxel(values) -> tuple[float, float, float] | None:
    try:
        voxel = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    if len(voxel) != 3 or not all(math.isfinite(v) and v > 0 for v in voxel):
        return None
    return voxel


def resample_factors(model_voxel, image_voxel) -> tuple[float, float, float] | None:
    """How much to scale each axis of an image of ``image_voxel`` to the model's voxel size;
    None when either is unknown or they agree within :data:`VOXEL_TOLERANCE`."""
    model_voxel, image_voxel = _voxel(model_voxel or ()), _voxel(image_voxel or ())
    if model_voxel is None or image_voxel is None:
        return None
    factors = tuple(i / m for i, m in zip(image_voxel, model_voxel))
    if all(abs(f - 1) <= VOXEL_TOLERANCE for f in factors):
        return None
    return factors


def voxel_mismatch(model: torch.nn.Module, voxel_size) -> str | None:
    """A one-line warning when ``voxel_size`` differs from the one ``model`` was trained at
    (the network then sees every object at another size), else None."""
    model_voxel = model_config(model).get("voxel_size")
    if resample_factors(model_voxel, voxel_size) is None:
        return None
    show = lambda v: "x".join(f"{float(x):g}" for x in v)  # noqa: E731
    return (f"the image's voxel size {show(voxel_size)} differs from the {show(model_voxel)} "
            "the model was trained at, so objects look larger or smaller to it than in "
            "training; resample to the model's voxel size")


def resize(array: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Trilinear resize of a ``(C, Z, Y, X)`` float tensor to the spatial ``shape``, a channel
    at a time (less memory)."""
    shape = tuple(int(s) for s in shape)
    if tuple(array.shape[1:]) == shape:
        return array
    out = torch.empty((array.shape[0], *shape), dtype=torch.float32)
    for c in range(array.shape[0]):
        out[c] = torch.nn.functional.interpolate(
            array[c][None, None].float(), size=shape, mode="trilinear",
            align_corners=False)[0, 0]
    return out
