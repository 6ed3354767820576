"""napari reader for .tif/.tiff/.npy/.npz volumes; the voxel size becomes the layer's scale."""

from __future__ import annotations

import re
from pathlib import Path

from ..core.files import READ_SUFFIXES, read_volume, suffix_of

# Integer files whose name says so open as Labels layers, everything else as Image layers.
_LABEL_NAME = re.compile(r"label|mask|seg|stroke|annot|pred|truth|(^|[_\-. ])gt([_\-. ]|$)", re.I)


def napari_get_reader(path):
    """Return a reader for the paths voxseg reads, or None (never raises) for the others."""
    if isinstance(path, (str, Path)):
        paths = [path]
    elif isinstance(path, (list, tuple)):
        paths = list(path)
    else:
        return None
    if not paths or not all(isinstance(p, (str, Path)) and suffix_of(p) in READ_SUFFIXES
                            and not Path(p).is_dir() for p in paths):
        return None
    return read_layers


def read_layers(path):
    """Layer data tuples for one path or a list of paths."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        array, voxel_size = read_volume(p)
        name = Path(p).stem  # every suffix the reader takes is a single one
        meta = {"name": name}
        if voxel_size is not None and array.ndim >= 3:
            meta["scale"] = (1.0,) * (array.ndim - 3) + tuple(voxel_size)
        kind = "labels" if array.dtype.kind in "iu" and _LABEL_NAME.search(name) else "image"
        layers.append((array, meta, kind))
    return layers
