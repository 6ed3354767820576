"""napari writers: Labels and Image layers to .tif, .nii/.nii.gz, .npy, .npz and .zarr,
keeping the voxel size (the layer's scale) and, for NIfTI opened with voxseg, its affine."""

from __future__ import annotations

import numpy as np

from ..core.files import write_volume
from .reader import TIME_FIRST, TIME_KEY


def write_single_layer(path: str, data, meta: dict) -> list[str]:
    """Write one layer's data; return the path written (napari's writer contract)."""
    if isinstance(data, (list, tuple)):  # a multiscale layer: its finest level
        data = data[0]
    scale = meta.get("scale")
    voxel = tuple(float(v) for v in scale[-3:]) if scale is not None and len(scale) >= 3 \
        else None
    metadata = meta.get("metadata") or {}
    affine, source = metadata.get("nifti_affine"), metadata.get("nifti_source_affine")
    # napari's Save dialog has asked before replacing a file; a folder (.zarr) is still
    # replaced only if voxseg wrote it. A layer read from NIfTI (or predicted from one) is
    # written in that file's orientation, with its affine.
    # A time series (read as one, or predicted from one) keeps its time axis first.
    data = np.asarray(data)
    time = data.ndim >= 4 and (metadata.get(TIME_KEY) == 0 or bool(metadata.get(TIME_FIRST)))
    written = write_volume(path, data, voxel, overwrite=True, time=time,
                           affine=None if affine is None else np.asarray(affine, float),
                           like=None if source is None else np.asarray(source, float))
    return [str(written)]
