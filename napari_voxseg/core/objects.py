"""Objects written next to a prediction: the chosen classes turned into instance labels
(:mod:`.instances`) and written atomically, block by block for zarr stores
(:mod:`.instance_blocks`), frame by frame for a time series.

    classes = object_classes("nucleus", model.config)        # names or numbers, "2,3"
    write_objects(labels, "pred-objects.tif", classes, voxel_size=(2, 1, 1), num_classes=3)
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import VoxSegError
from .paths import stem_of, suffix_of


def objects_path(out) -> Path:
    """Where the objects of a prediction written to ``out`` go: ``<stem>-objects<suffix>``."""
    out = Path(out)
    return out.with_name(f"{stem_of(out)}-objects{suffix_of(out)}")


def object_classes(text: str, config: dict) -> list[int]:
    """The classes named in ``text`` (comma-separated numbers 1..K or class names of the
    model); multi-label: the class layers, 1-based."""
    classes = config.get("classes", [])
    names = {str(c.get("name", "")).lower(): i + 1 for i, c in enumerate(classes)}
    count = len(classes) or int(config["architecture"]["num_classes"])
    chosen = []
    for part in (p.strip() for p in str(text).split(",")):
        if part.isdigit() and 1 <= int(part) <= count:
            chosen.append(int(part))
        elif part.lower() in names:
            chosen.append(names[part.lower()])
        else:
            known = ", ".join(f"{i} {n}" for n, i in names.items() if n) or f"1..{count}"
            raise VoxSegError(f"--instances {text!r}: {part!r} is not a class of the model "
                              f"({known}); give numbers or names, comma-separated")
    if config.get("task", "multiclass") == "regression":
        raise VoxSegError("--instances turns classes into objects; a regression model has "
                          "values, not classes")
    return sorted(set(chosen))


def write_objects(labels, path, classes: Sequence[int], *, voxel_size=None,
                  num_classes: int | None = None, overwrite: bool = False, time: bool = False,
                  block_shape: Sequence[int] | None = None) -> int:
    """Write the objects of ``labels`` (a prediction: (Z, Y, X), multi-label (K, Z, Y, X),
    with ``time`` a series of those, or a zarr store of one) to ``path``; the number of
    objects (in the last frame of a series, as each frame is numbered from 1)."""
    from .files import write_volume

    path = Path(path)
    if suffix_of(path) == ".zarr":
        if time:
            raise VoxSegError("objects of a time series go into a file (.tif, .npy, ...), "
                              "not a .zarr store; name the output otherwise")
        return _write_zarr_objects(labels, path, classes, voxel_size=voxel_size,
                                   num_classes=num_classes, overwrite=overwrite,
                                   block_shape=block_shape)
    found = make_objects(labels, classes, voxel_size=voxel_size, num_classes=num_classes,
                         time=time)
    write_volume(path, found, voxel_size, overwrite=overwrite, time=time)
    return object_count(found, time)


def object_count(objects: np.ndarray, time: bool = False) -> int:
    """How many objects (ids 1..N); of a series, in its last frame (each numbered from 1)."""
    last = objects[-1] if time else objects
    return int(last.max()) if last.size else 0


def make_objects(labels, classes: Sequence[int], *, voxel_size=None,
                 num_classes: int | None = None, time: bool = False) -> np.ndarray:
    """The objects of a prediction in memory (with ``time``, of each frame, numbered from 1
    in each)."""
    from .instances import instance_labels

    if not time:
        return instance_labels(np.asarray(labels), classes, voxel_size=voxel_size,
                               num_classes=num_classes)
    return np.stack([instance_labels(frame, classes, voxel_size=voxel_size,
                                     num_classes=num_classes) for frame in np.asarray(labels)])


def _write_zarr_objects(labels, path: Path, classes, *, voxel_size, num_classes, overwrite,
                        block_shape) -> int:
    """Block by block into a new zarr store, swapped in when complete."""

    from .folders import replace_folder, sweep_leftovers, temporary_folder_beside
    from .instance_blocks import DEFAULT_BLOCK, instance_labels_blocks
    from .instances import output_shape, plan
    from .outputs import ZARR_MARK, check_output
    from .zarrs import create_image, open_zarr

    path = check_output(path, overwrite=overwrite)
    source = open_zarr(labels) if isinstance(labels, (str, Path)) else labels
    groups = plan(source.shape, source.dtype, classes, num_classes)
    shape = output_shape(source.shape, groups)
    block = tuple(block_shape or DEFAULT_BLOCK)
    if path.exists():
        sweep_leftovers(path)
    tmp = temporary_folder_beside(path)
    try:
        store = create_image(tmp, shape, "uint32", chunks=(*(1,) * (len(shape) - 3), *block),
                             voxel_size=voxel_size, attrs={ZARR_MARK: "objects"})
        count = instance_labels_blocks(source, store, classes, voxel_size=voxel_size,
                                       num_classes=num_classes, block_shape=block)
        replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count
