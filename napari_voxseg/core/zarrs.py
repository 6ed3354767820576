"""Opening .zarr stores lazily: a plain array, or the levels of an OME-Zarr multiscale image
with the voxel size and channel axis its metadata gives. numpy and zarr only (no torch), so the
napari reader can use it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from .errors import VoxSegError
from .folders import is_zarr_store, recover_folder

if TYPE_CHECKING:
    from zarr import Array


def open_zarr(path):
    """The array in a .zarr store (the first one, or level 0 of a multiscale group), lazily."""
    levels, _ = open_zarr_levels(path)
    return levels[0]


def open_zarr_levels(path) -> tuple[list, dict]:
    """The arrays of a .zarr store, lazily: one array, or the levels of an OME-Zarr
    multiscale image (finest first), and what its metadata says: ``voxel_size`` (Z, Y, X) and
    ``channel_axis`` when known, and ``attrs``, the store's own attributes (of the group for an
    OME-Zarr image, where voxseg marks what it wrote)."""
    import zarr

    path = Path(path)
    recover_folder(path, is_zarr_store)  # a write killed between its two renames
    if not path.exists():
        raise VoxSegError(f"{path} does not exist; check the path")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises many kinds for a folder that is not a store
        raise VoxSegError(f"{path} is not a readable zarr store ({type(exc).__name__}); give "
                          "a .zarr folder written by zarr") from None
    attrs = dict(getattr(node, "attrs", {}) or {})
    if hasattr(node, "shape"):
        voxel = attrs.get("voxel_size")
        return [node], {"voxel_size": tuple(voxel) if voxel else None, "attrs": attrs}
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if multiscales:
        first = multiscales[0]
        try:
            levels = [node[d["path"]] for d in first["datasets"]]
        except (KeyError, TypeError):
            raise VoxSegError(f"{path}: its OME-Zarr metadata names levels that are not in "
                              "the store; rewrite it with an OME-Zarr writer") from None
        ndim = cast("Array", levels[0]).ndim  # a level is an array (a group has no ndim)
        return levels, {**_ome_meta(first, ndim), "attrs": attrs}
    arrays = sorted(node.array_keys()) if hasattr(node, "array_keys") else []
    if not arrays:
        raise VoxSegError(f"{path} is a zarr group with no arrays in it; give a store that "
                          "holds the volume")
    return [node[arrays[0]]], {"voxel_size": None, "attrs": attrs}


def _ome_meta(multiscale: dict, ndim: int) -> dict:
    """Voxel size (the last three axes' scale) and channel axis from OME-NGFF metadata."""
    axes = multiscale.get("axes") or []
    names = [a.get("name", "") if isinstance(a, dict) else str(a) for a in axes]
    kinds = [a.get("type", "") if isinstance(a, dict) else "" for a in axes]
    channel = next((i for i, (n, k) in enumerate(zip(names, kinds)) if k == "channel"
                    or n == "c"), None)
    voxel = None
    for t in multiscale["datasets"][0].get("coordinateTransformations", []):
        if t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
            scale = [float(v) for v in t["scale"]][-3:]
            if all(math.isfinite(v) and v > 0 for v in scale):
                voxel = tuple(scale)
    return {"voxel_size": voxel, "channel_axis": channel}


# OME-NGFF's version for zarr v3 stores: what napari-ome-zarr, Fiji/MoBIE and neuroglancer read.
NGFF_VERSION = "0.5"
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def image_axes(ndim: int, *, time: bool = False) -> str:
    """NGFF axis names of an output of ``ndim`` dimensions: ``zyx``, ``czyx`` (classes or
    channels first), ``tzyx`` or ``tczyx`` (a time series)."""
    lead = {3: "", 4: "t" if time else "c", 5: "tc"}.get(ndim)
    if lead is None:
        raise VoxSegError(f"a zarr output has 3 to 5 dimensions, not {ndim}")
    return lead + "zyx"


def create_image(path, shape, dtype, *, chunks=None, voxel_size=None, time: bool = False,
                 attrs: dict | None = None):
    """A new OME-Zarr image (NGFF 0.5) at ``path``: a zarr group holding one level ``0`` of
    ``shape`` (zeros) with the multiscales metadata (axes and their types, the voxel size as
    the scale, also kept as the ``voxel_size`` attribute) and ``attrs`` beside it; the
    level's array, to be written."""
    import zarr

    axes = image_axes(len(shape), time=time)
    scale = [1.0] * (len(shape) - 3) + [float(v) for v in (voxel_size or (1.0, 1.0, 1.0))]
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    array = group.create_array("0", shape=tuple(shape), dtype=dtype,
                               chunks=tuple(chunks) if chunks is not None else "auto",
                               fill_value=0, dimension_names=list(axes))
    multiscale: dict[str, Any] = {
        "name": Path(path).name,
        "axes": [{"name": a, "type": _AXIS_TYPES[a]} for a in axes],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": scale}]}],
    }
    voxel = None if voxel_size is None else [float(v) for v in voxel_size]
    group.attrs.update({**(attrs or {}), "voxel_size": voxel,
                        "ome": {"version": NGFF_VERSION, "multiscales": [multiscale]}})
    return array


def image_array(path, mode: Literal["r", "r+", "a", "w", "w-"] = "r+"):
    """The level-0 array of a store :func:`create_image` made (or a plain zarr array)."""
    import zarr

    node = zarr.open(str(path), mode=mode)
    return node if hasattr(node, "shape") else node["0"]
