"""NIfTI volumes: read in RAS+ order as (Z, Y, X) with their voxel size, and written back
either plainly (the voxel size, or a given affine) or in the orientation and with the affine
of the file they were read from (``like``), so that a prediction lies on its scan."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from .errors import VoxSegError

if TYPE_CHECKING:
    from nibabel.spatialimages import SpatialImage


def read_nifti(path: Path, time: bool = False):
    """A NIfTI volume as (Z, Y, X) in RAS+ orientation (reoriented to the closest canonical
    axes), its voxel size (Z, Y, X) and that canonical affine; :class:`VoxSegError` with one
    line for a damaged file or a series (with ``time``, a series is (T, Z, Y, X))."""
    try:
        return _read_nifti(Path(path), time)
    except VoxSegError:
        raise
    except Exception as exc:  # nibabel raises its own kinds for damaged files
        raise VoxSegError(f"{Path(path).name} is not a readable NIfTI file "
                          f"({type(exc).__name__}: {exc}); check that it was written "
                          "completely") from None


def _read_nifti(path: Path, time: bool = False):
    import nibabel as nib

    img = cast("SpatialImage", nib.load(str(path)))  # a NIfTI file loads as a spatial image
    shape = tuple(img.shape)
    if len(shape) > 4 or (len(shape) == 4 and shape[3] > 1 and not time):
        raise VoxSegError(f"{path.name} is a {len(shape)}D series {shape} (e.g. time points); "
                          "voxseg segments one 3D volume: extract one (e.g. fslroi or "
                          "nibabel's slicer) and open that")
    if len(shape) < 3:
        raise VoxSegError(f"{path.name} is {len(shape)}D {shape}; voxseg segments 3D volumes")
    canonical = nib.as_closest_canonical(img)
    data = np.asanyarray(canonical.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    # (X, Y, Z) -> (Z, Y, X); a series (X, Y, Z, T) -> (T, Z, Y, X)
    array = np.ascontiguousarray(data.transpose(*range(data.ndim)[::-1]))
    zooms = [float(z) for z in canonical.header.get_zooms()[:3]]
    voxel = tuple(zooms[::-1]) if all(np.isfinite(zooms)) and min(zooms) > 0 else None
    return array, voxel, np.asarray(canonical.affine, dtype=float)


def nifti_affine(path) -> np.ndarray:
    """The affine a NIfTI file stores (its own orientation; the header alone is read)."""
    import nibabel as nib

    try:
        return np.asarray(cast("SpatialImage", nib.load(str(path))).affine, dtype=float)
    except Exception as exc:
        raise VoxSegError(f"{Path(path).name} is not a readable NIfTI file "
                          f"({type(exc).__name__}: {exc})") from None


def _write_nifti(target: str, array: np.ndarray, voxel_size, affine=None,
                 time: bool = False, like=None) -> None:
    import nibabel as nib

    if array.ndim != 3 and not (array.ndim == 4 and time):
        raise VoxSegError(f"NIfTI output takes one (Z, Y, X) volume; this one is "
                          f"{array.ndim}D {array.shape}: write it as .tif, .npy or .zarr")
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    data = np.ascontiguousarray(array.transpose(*range(array.ndim)[::-1]))  # (X, Y, Z[, T])
    if like is not None:
        image = _as_read_from(data, like)
    else:
        if affine is None:
            z, y, x = (float(v) for v in (voxel_size or (1.0, 1.0, 1.0)))
            affine = np.diag([x, y, z, 1.0])
        image = nib.Nifti1Image(data, np.asarray(affine, float))
    image.header.set_xyzt_units("mm")
    nib.save(image, target)


def _as_read_from(data: np.ndarray, like):
    """A NIfTI image of ``data`` ((X, Y, Z[, T]), as :func:`read_nifti` put the file ``like``
    (a path, or that file's own 4x4 affine) in RAS+ order) back in that file's orientation,
    with its affine: the output lies on the scan in any viewer."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    original = nifti_affine(like) if isinstance(like, (str, Path)) else np.asarray(like, float)
    if original.shape != (4, 4) or not np.isfinite(original).all():
        raise VoxSegError(f"the reference affine must be a finite 4x4 matrix, got shape "
                          f"{original.shape}")
    ornt = io_orientation(original)
    back = ornt_transform(axcodes2ornt(("R", "A", "S")), ornt)
    # The canonical affine of the original's shape, which read_nifti's array has.
    stored = np.empty(3, int)
    stored[ornt[:, 0].astype(int)] = data.shape[:3]
    canonical = nib.Nifti1Image(data, original @ inv_ornt_aff(ornt, tuple(stored)))
    image = canonical.as_reoriented(back)
    return nib.Nifti1Image(np.asanyarray(image.dataobj), original)
