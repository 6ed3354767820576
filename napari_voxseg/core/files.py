"""Reading and writing volumes (.tif/.tiff, .npy, .npz) with their voxel size, numpy only.

``read_volume(path) -> (array, voxel_size or None)``; ``write_volume(path, array, voxel_size)``
writes to a temporary file beside the target and renames it, so a crash never leaves half a file.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VoxSegError
from .folders import replace_folder, replacing_file, temporary_folder_beside
from .nifti import _write_nifti, nifti_affine, read_nifti  # noqa: F401
from .outputs import ZARR_MARK, check_output
from .paths import READ_SUFFIXES, WRITE_SUFFIXES, stem_of, suffix_of  # noqa: F401
from .zarrs import create_image, open_zarr_levels


def _tiff_voxel_size(tif) -> tuple[float, float, float] | None:
    """Voxel size (Z, Y, X) from ImageJ metadata and the X/Y resolution tags, if present."""
    meta = tif.imagej_metadata or {}
    page = tif.pages[0]
    try:
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        x = xres[1] / xres[0] if xres[0] else None
        y = yres[1] / yres[0] if yres[0] else None
    except (KeyError, TypeError, ZeroDivisionError):
        x = y = None
    z = meta.get("spacing")
    if x is None or y is None or not meta:
        return None
    z = float(z) if z else 1.0
    if not all(np.isfinite(v) and v > 0 for v in (z, y, x)):
        return None
    return (z, float(y), float(x))


def _unsqueezed(tif, series) -> tuple[str, tuple[int, ...]]:
    """A TIFF series' axes and shape with its length-1 axes kept (Z of one slice, say).
    tifffile 2026.9 removed ``get_axes(squeeze=False)`` (its series are always squeezed):
    there they come from the ImageJ or OME metadata, else the squeezed ones are used."""
    if hasattr(series, "get_axes"):
        return series.get_axes(False), tuple(series.get_shape(False))
    expanded = _axes_from_metadata(tif, series)
    if expanded is not None and np.prod(expanded[1]) == np.prod(series.shape):
        return expanded
    return series.axes, tuple(series.shape)


def _axes_from_metadata(tif, series) -> tuple[str, tuple[int, ...]] | None:
    """What tifffile's ``get_axes(False)``/``get_shape(False)`` gave: (T, Z, C or the OME
    order), Y, X, S, from the ImageJ or OME metadata; None for other TIFFs."""
    sizes = dict(zip(series.axes, series.shape))
    samples = int(getattr(series.keyframe, "samplesperpixel", 1) or 1)
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        order = "TZC"
        outer = {"T": meta.get("frames", 1), "Z": meta.get("slices", 1),
                 "C": meta.get("channels", 1)}
    elif tif.is_ome:
        pixels = _ome_pixels(tif)
        order = "".join(a for a in str(pixels.get("DimensionOrder", "XYCZT"))[::-1]
                        if a in "TZC")
        outer = {a: int(pixels.get(f"Size{a}", 1)) for a in "TZC"}
        outer["C"] = max(1, outer["C"] // samples)  # RGB samples are counted in SizeC
    else:
        return None
    if sorted(order) != ["C", "T", "Z"] or "Y" not in sizes or "X" not in sizes:
        return None
    shape = (*(int(outer[a]) for a in order), sizes["Y"], sizes["X"], samples)
    return order + "YXS", shape


def _imagej_axes(array: np.ndarray, tif, path: Path, time: bool = False
                 ) -> tuple[np.ndarray, dict]:
    """Undo tifffile's squeeze for ImageJ files: keep Z (even of length 1), channels first;
    and the channel axis (0) when there are channels. Time points (T > 1) are refused, or
    with ``time`` put first: (T, [C,] Z, Y, X)."""
    axes, shape = _unsqueezed(tif, tif.series[0])
    keep = [(a, n) for a, n in zip(axes, shape) if a in "ZYX" or n > 1]
    array = array.reshape([n for _, n in keep])
    names = "".join(a for a, _ in keep)
    _refuse_series(path, [f"{a}={n}" for a, n in keep if a not in "ZCYX" and not
                          (time and a == "T")])
    order = [names.index(a) for a in "TCZYX" if a in names]
    array = np.moveaxis(array, order, list(range(len(order))))
    return array, {"channel_axis": (1 if "T" in names else 0) if "C" in names else None,
                   "time_axis": 0 if "T" in names else None}


def _refuse_series(path: Path, extra: list[str]) -> None:
    if extra:
        raise VoxSegError(f"{path.name} is a series ({', '.join(extra)} besides Z, C, Y, X; "
                          "e.g. time points); voxseg trains on one 3D volume: save one time "
                          "point (e.g. in Fiji, Image > Duplicate), or predict the series "
                          "frame by frame with `predict` (add --time-axis N if the file does "
                          "not say which axis is time)")


def _info(voxel_size, channel_axis=None, channel_names=None, time_axis=None) -> dict:
    return {"voxel_size": voxel_size, "channel_axis": channel_axis,
            "channel_names": channel_names, "time_axis": time_axis}


def _ome_tiff(tif, path: Path, time: bool = False) -> tuple[np.ndarray, dict]:
    """An OME-TIFF's first image as (Z, Y, X) or (C, Z, Y, X), with the voxel size from
    PhysicalSize{Z,Y,X} and the channel names; a time series is refused, or with ``time``
    read as (T, [C,] Z, Y, X)."""

    series = tif.series[0]
    axes, shape = _unsqueezed(tif, series)
    array = series.asarray().reshape(shape)
    if "S" in axes and shape[axes.index("S")] > 1 and shape[axes.index("C")] == 1:
        axes = axes.replace("C", "c").replace("S", "C")  # RGB samples are the channels
    series_of = time and "T" in axes and shape[axes.index("T")] > 1
    _refuse_series(path, [f"{a}={n}" for a, n in zip(axes, shape) if a not in "ZCYX" and n > 1
                          and not (series_of and a == "T")])
    keep = [i for i, a in enumerate(axes) if a in "ZCYX" or (series_of and a == "T")]
    array = array.reshape([shape[i] for i in keep])
    names = "".join(axes[i] for i in keep)
    if not series_of:  # one time point: a plain (C, Z, Y, X) volume
        array = np.moveaxis(array, [names.index(a) for a in "CZYX"], [0, 1, 2, 3])
        return _ome_metadata(tif, array, _info(None))
    array = np.moveaxis(array, [names.index(a) for a in "TCZYX"], [0, 1, 2, 3, 4])
    _, info = _ome_metadata(tif, array[0], _info(None))
    squeeze = array.shape[1] == 1
    info.update(time_axis=0, channel_axis=None if squeeze else 1)
    return (array[:, 0] if squeeze else array), info


def _ome_pixels(tif) -> dict:
    """The first image's OME ``Pixels`` element as a dict ({} when it cannot be read)."""
    import tifffile

    try:
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        return dict((image[0] if isinstance(image, list) else image)["Pixels"])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return {}


def _ome_metadata(tif, array: np.ndarray, info: dict) -> tuple[np.ndarray, dict]:
    """The voxel size and channel names of an OME-TIFF (C, Z, Y, X) array; a single
    channel dropped."""
    pixels = _ome_pixels(tif)
    sizes = [pixels.get(f"PhysicalSize{a}") for a in "ZYX"]
    if sizes[1] and sizes[2]:
        voxel = (float(sizes[0] or 1.0), float(sizes[1]), float(sizes[2]))
        if all(np.isfinite(v) and v > 0 for v in voxel):
            info["voxel_size"] = voxel
    if array.shape[0] == 1:
        array = array[0]
    else:
        info["channel_axis"] = 0
        channels = pixels.get("Channel", [])
        channels = channels if isinstance(channels, list) else [channels]
        found = [str(c.get("Name")) if isinstance(c, dict) and c.get("Name") else None
                 for c in channels]
        if len(found) == array.shape[0] and all(found):
            info["channel_names"] = found
    return array, info


def read_volume(path) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Read one array and its voxel size (None when the file does not say)."""
    array, info = read_volume_info(path)
    return array, info["voxel_size"]


def read_volume_info(path, *, time: bool = False) -> tuple[np.ndarray, dict]:
    """Read one array and what the file says about it: ``voxel_size`` (Z, Y, X) or None,
    ``channel_axis`` (0 when the file marks the first axis as channels, else None) and
    ``channel_names`` (or None). Channels always come first: (C, Z, Y, X). A time series is
    refused, or with ``time`` read as (T, [C,] Z, Y, X) (``time_axis`` 0, ``channel_axis``
    1) when the file marks its time axis (OME-TIFF, ImageJ TIFF, 4D NIfTI)."""
    path = Path(path)
    suffix = suffix_of(path)
    if suffix not in READ_SUFFIXES + (".zarr",):
        raise VoxSegError(f"{path.name}: cannot read '{suffix or 'no suffix'}' files; give "
                          f"one of {', '.join(READ_SUFFIXES + ('.zarr',))}")
    if not path.exists():
        raise VoxSegError(f"{path} does not exist; check the path")
    if suffix in (".nii", ".nii.gz"):
        if path.is_dir():
            raise VoxSegError(f"{path} is a folder; give a NIfTI file")
        array, voxel, _ = read_nifti(path, time)
        return array, _info(voxel, time_axis=0 if array.ndim == 4 else None)
    if suffix == ".zarr":  # read whole; prediction reads zarr block by block instead
        levels, info = open_zarr_levels(path)
        array = np.asarray(levels[0])
        channel = info.get("channel_axis")
        if channel is not None and array.ndim == 4:
            array = np.moveaxis(array, channel, 0)
        return array, _info(info.get("voxel_size"), 0 if channel is not None else None)
    if path.is_dir():
        raise VoxSegError(f"{path} is a folder; give a file ({', '.join(READ_SUFFIXES)})")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            # tifffile logs each damaged tag before it raises; the one-line error says it all.
            log = logging.getLogger("tifffile")
            level = log.level
            log.setLevel(logging.CRITICAL)  # setLevel, not .level =, so the level cache clears
            try:
                with tifffile.TiffFile(path) as tif:
                    if tif.is_ome:
                        return _ome_tiff(tif, path, time)
                    array = tif.asarray()
                    voxel = _tiff_voxel_size(tif)
                    axes: dict[str, Any] = {}
                    if tif.is_imagej:
                        array, axes = _imagej_axes(array, tif, path, time)
            finally:
                log.setLevel(level)
            return array, _info(voxel, **axes)
        if suffix == ".npy":
            with open(path, "rb") as f:
                if f.read(6) != b"\x93NUMPY":
                    raise VoxSegError(f"{path.name} is not a readable .npy file (no NumPy "
                                      "header); save it with np.save")
            return np.load(path, allow_pickle=False), _info(None)
        with np.load(path, allow_pickle=False) as npz:
            keys = [k for k in npz.files if k != "voxel_size"]
            if len(keys) != 1:
                raise VoxSegError(f"{path.name} holds {len(keys)} arrays ({', '.join(keys)}); "
                                  "save one volume per .npz file (plus an optional 'voxel_size')")
            array = npz[keys[0]]
            voxel = None
            if "voxel_size" in npz.files:
                v = np.asarray(npz["voxel_size"], dtype=float).ravel()
                if v.size == 3 and np.isfinite(v).all() and (v > 0).all():
                    voxel = tuple(float(x) for x in v)
            return array, _info(voxel)
    except VoxSegError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise VoxSegError(f"{path.name} holds Python objects (pickle), which voxseg never "
                              "loads; save a plain numeric array") from None
        raise VoxSegError(f"{path.name} is not a readable {suffix} file ({exc}); check that "
                          "it was written completely") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        raise VoxSegError(f"{path.name} is not a readable {suffix} file ({exc}); check that "
                          "it was written completely") from None
    except Exception as exc:  # tifffile raises its own types for damaged files
        raise VoxSegError(f"{path.name} is not a readable {suffix} file "
                          f"({type(exc).__name__}: {exc}); check that it was written "
                          "completely") from None


def _write_tiff(target: str, array: np.ndarray, voxel_size, time: bool = False,
                ome: bool = False) -> None:
    """An ImageJ TIFF that says its axes, or an OME-TIFF (``ome``: the name asks for one) for a
    series and for integers past 65535, which ImageJ cannot hold."""
    import tifffile

    if array.dtype.kind in "iu":
        top = int(array.max()) if array.size else 0
        if top >= 65536:  # ImageJ has no 32-bit integers: an OME-TIFF keeps the labels exact
            array, ome = array.astype(np.uint32), True
        else:
            array = array.astype(np.uint8 if top < 256 else np.uint16)
    elif array.dtype != np.float32:
        array = array.astype(np.float32)
    axes = ({4: "TZYX", 5: "TCZYX"}.get(array.ndim, "TZYX") if time else
            {3: "ZYX", 4: "CZYX"}.get(array.ndim))
    if ome and (time or array.dtype == np.uint32):
        meta: dict = {"axes": axes}
        if voxel_size is not None:
            meta.update(zip(("PhysicalSizeZ", "PhysicalSizeY", "PhysicalSizeX"),
                            (float(v) for v in voxel_size)))
        tifffile.imwrite(target, array, ome=True, photometric="minisblack", metadata=meta)
        return
    if axes and "C" in axes:  # ImageJ's order has Z before C
        array = np.ascontiguousarray(np.moveaxis(array, axes.index("C"), axes.index("Z")))
        axes = axes.replace("CZ", "ZC")
    kwargs: dict = {"metadata": {"axes": axes}} if axes else {}
    if voxel_size is not None:
        z, y, x = (float(v) for v in voxel_size)
        kwargs = {"resolution": (1.0 / x, 1.0 / y),
                  "metadata": {"spacing": z, "unit": "um", **kwargs.get("metadata", {})}}
    if array.shape[-1] == 1 and not time:
        # ImageJ reads a trailing axis of length 1 as samples and loses it: for a volume one
        # voxel wide, write a plain TIFF whose description keeps the exact shape instead.
        tifffile.imwrite(target, array, photometric="minisblack", metadata={"axes": axes})
        return
    tifffile.imwrite(target, array, imagej=True, photometric="minisblack", **kwargs)


def write_volume(path, array: np.ndarray, voxel_size=None, *, affine=None, like=None,
                 overwrite: bool = False, time: bool = False) -> Path:
    """Write ``array`` to ``path`` (format from its suffix) atomically; return the path.
    ``like``: for NIfTI, the NIfTI file (or its own affine, :func:`nifti_affine`) that the
    array was read from (a prediction of it, say): the output takes that file's affine and
    orientation, so it lies on the scan. ``affine``: else the 4x4 affine of the volume's
    (Z, Y, X) array read back as (X, Y, Z) (what :func:`read_nifti` gives); default: the
    voxel size, no rotation.
    ``time``: the first axis is time, (T, [C,] Z, Y, X), and the file says so (OME-TIFF for
    ``.ome.tif`` names, else an ImageJ hyperstack; 4D NIfTI; a zarr ``axes`` attribute).
    An existing ``path`` is replaced only with ``overwrite`` (a folder only if voxseg wrote
    it): see :mod:`.outputs`."""
    path = check_output(path, overwrite=overwrite)
    suffix = suffix_of(path)
    if suffix == ".zarr":
        return _write_zarr(path, np.asarray(array), voxel_size, time)
    with replacing_file(path, suffix=f".tmp{suffix}") as tmp:
        if suffix in (".tif", ".tiff"):
            _write_tiff(tmp, array, voxel_size, time, path.name.lower().endswith(
                (".ome.tif", ".ome.tiff")))
        elif suffix in (".nii", ".nii.gz"):
            _write_nifti(tmp, np.asarray(array), voxel_size, affine, time, like)
        elif suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, array)
        else:
            extra: dict[str, Any] = ({} if voxel_size is None else
                                     {"voxel_size": np.asarray(voxel_size, float)})
            with open(tmp, "wb") as f:
                np.savez_compressed(f, data=array, **extra)
    return path


def _write_zarr(path: Path, array: np.ndarray, voxel_size, time: bool = False) -> Path:
    """One OME-Zarr image (NGFF 0.5: the voxel size as its scale, its axes named), swapped in
    atomically."""
    tmp = temporary_folder_beside(path)
    try:
        store = create_image(tmp, array.shape, array.dtype, voxel_size=voxel_size, time=time,
                             attrs={ZARR_MARK: "volume"})
        store[...] = array
        replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
