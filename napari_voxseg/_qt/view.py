"""Where the viewer looks: the block of a layer in view, which live previews predict."""

from __future__ import annotations

import math

import numpy as np

# A live preview covers at most this many tiles along each axis in view, around its centre,
# so that it takes seconds on a CPU however large the volume and however far out the zoom.
PREVIEW_TILES_2D = 4
PREVIEW_TILES_3D = 2


def camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def canvas_size(viewer) -> tuple[float, float] | None:
    """The canvas size in screen pixels, or None when the viewer does not say."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    size = size if size is not None else getattr(viewer, "_canvas_size", None)
    return None if size is None else tuple(float(v) for v in size)


def view_region(viewer, layer, patch) -> tuple[slice, slice, slice] | None:
    """The block of ``layer`` (its last three axes, Z, Y, X) that the viewer shows: in 2D the
    slice in view with its neighbours, over the part of the plane on the canvas; in 3D a
    block around the camera's centre. None when the view does not meet the volume."""
    spatial = layer.data.shape[-3:]
    scale = np.asarray(layer.scale[-3:], float)
    translate = np.asarray(layer.translate[-3:], float)
    first = viewer.dims.ndim - 3  # the layer's spatial axes are the viewer's last three
    displayed = list(viewer.dims.displayed)
    cam = camera(viewer)
    centre = np.asarray(cam.center, float)[-len(displayed):]
    canvas = canvas_size(viewer) if len(displayed) == 2 else None
    point = np.asarray(viewer.dims.point, float)[-3:]
    region = []
    for axis, (size, p) in enumerate(zip(spatial, patch)):
        if first + axis in displayed:
            k = displayed.index(first + axis)
            middle = (centre[k] - translate[axis]) / scale[axis]
            half = None if canvas is None else canvas[k] / 2 / max(cam.zoom, 1e-9) / scale[axis]
            lo, hi = _displayed_span(middle, size, p, half)
        else:  # the slice in view, and a few on each side (one tile deep with context)
            middle = int(round((point[axis] - translate[axis]) / scale[axis]))
            reach = max(0, p // 4 - 1)
            lo, hi = middle - reach, middle + reach + 1
        lo, hi = max(0, lo), min(size, hi)
        if hi <= lo:
            return None
        region.append(slice(lo, hi))
    return tuple(region)


def _displayed_span(middle: float, size: int, patch: int, half: float | None) -> tuple[int, int]:
    """The span of a displayed axis around ``middle`` (in voxels): in 2D (``half``: half the
    canvas, in voxels) at most PREVIEW_TILES_2D tiles; in 3D a block of PREVIEW_TILES_3D
    tiles, moved inside the volume if need be."""
    if half is not None:
        half = min(half, PREVIEW_TILES_2D * patch / 2)
        return int(math.floor(middle - half)), int(math.ceil(middle + half))
    length = min(size, PREVIEW_TILES_3D * patch)
    lo = min(max(0, int(round(middle - length / 2))), size - length)
    return lo, lo + length
