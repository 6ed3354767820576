"""napari reader for .tif/.tiff/.npy/.npz volumes and .zarr stores (OME-Zarr too, opened
lazily); the voxel size becomes the layer's scale."""

from __future__ import annotations

import re
from pathlib import Path

from ..core.files import (
    READ_SUFFIXES,
    nifti_affine,
    read_nifti,
    read_volume_info,
    stem_of,
    suffix_of,
)

# In the metadata of a layer read from a time series: its first axis is time.
TIME_KEY = "time_axis"
# In the metadata of a prediction of a series: its first axis is time, when saved (not
# TIME_KEY, which marks an image to predict).
TIME_FIRST = "voxseg_time_first"

# Integer files whose name says so open as Labels layers, everything else as Image layers.
_LABEL_NAME = re.compile(r"label|mask|seg|stroke|annot|pred|truth|(^|[_\-. ])gt([_\-. ]|$)", re.I)


# In the metadata of a layer read from NIfTI: its canonical (RAS+) affine, and the file's own
# affine, which a NIfTI written from the layer (or from a prediction of it) takes.
NIFTI_KEYS = ("nifti_affine", "nifti_source_affine")

def napari_get_reader(path):
    """Return a reader for the paths voxseg reads, or None (never raises) for the others."""
    if isinstance(path, (str, Path)):
        paths = [path]
    elif isinstance(path, (list, tuple)):
        paths = list(path)
    else:
        return None
    if not paths or not all(isinstance(p, (str, Path)) for p in paths):
        return None
    if all(suffix_of(p) == ".zarr" and Path(p).is_dir() for p in paths):
        return read_zarr_layers
    if not all(suffix_of(p) in READ_SUFFIXES and not Path(p).is_dir() for p in paths):
        return None
    return read_layers


def read_zarr_layers(path):
    """Lazy (dask) layers for .zarr stores; an OME-Zarr multiscale image as one multiscale
    layer. Nothing is read until napari shows it."""
    import dask.array as da

    from ..core.zarrs import open_zarr_levels

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        levels, info = open_zarr_levels(p)
        data = [da.from_zarr(level) for level in levels]
        name = Path(p).name[: -len(".zarr")] or Path(p).name
        meta = {"name": name}
        ndim = data[0].ndim
        channel = info.get("channel_axis")
        if info.get("voxel_size") and ndim >= 3:
            meta["scale"] = (1.0,) * (ndim - 3) + tuple(info["voxel_size"])
        if len(data) > 1:
            meta["multiscale"] = True
        attrs = info.get("attrs") or {}  # voxseg marks its labels stores there
        labels = data[0].dtype.kind in "iu" and (attrs.get("napari_voxseg") == "labels"
                                                 or _LABEL_NAME.search(name))
        if channel is not None and not labels and ndim == 4:
            meta["channel_axis"] = channel  # one Image layer per channel, each (Z, Y, X)
            if info.get("voxel_size"):
                meta["scale"] = tuple(info["voxel_size"])
        layers.append((data if len(data) > 1 else data[0], meta,
                       "labels" if labels else "image"))
    return layers


def read_layers(path):
    """Layer data tuples for one path or a list of paths."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        if suffix_of(p) in (".nii", ".nii.gz"):
            array, voxel_size, affine = read_nifti(p, time=True)
            meta = {"metadata": {"nifti_affine": affine.tolist(),
                                 "nifti_source_affine": nifti_affine(p).tolist()}}
            info = {"time_axis": 0 if array.ndim == 4 else None}
        else:
            array, info = read_volume_info(p, time=True)
            voxel_size = info["voxel_size"]
            meta = {}
        if info.get("time_axis") == 0:  # a time series: T first, the time slider in napari
            meta.setdefault("metadata", {})[TIME_KEY] = 0
        name = stem_of(p)
        meta["name"] = name
        if voxel_size is not None and array.ndim >= 3:
            meta["scale"] = (1.0,) * (array.ndim - 3) + tuple(voxel_size)
        kind = "labels" if array.dtype.kind in "iu" and _LABEL_NAME.search(name) else "image"
        if kind == "image" and array.ndim == 5 and info.get("channel_axis") == 1:
            meta["channel_axis"] = 1  # one (T, Z, Y, X) layer per channel
            names = info.get("channel_names") or [f"channel {c}"
                                                  for c in range(array.shape[1])]
            meta["name"] = [f"{name} {n}" for n in names]
        elif kind == "image" and array.ndim == 4 and info.get("channel_axis") == 0:
            # One Image layer per channel (napari's way), each (Z, Y, X) with the voxel size;
            # VoxSeg trains on them together when they are chosen as channels.
            meta["channel_axis"] = 0
            names = info.get("channel_names") or [f"channel {c}"
                                                  for c in range(array.shape[0])]
            meta["name"] = [f"{name} {n}" for n in names]
            if voxel_size is not None:
                meta["scale"] = tuple(voxel_size)
        layers.append((array, meta, kind))
    return layers
