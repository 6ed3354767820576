"""Where voxseg may write: the one rule that the command line, the widget and the Python API
(``save_model``, ``write_volume``, ``predict_blocks``) all call before they write anything.

1. An output is never an input: not the same file (after ``..``, symlinks, hard links and the
   case of a case-insensitive file system), not a file inside an input folder (a ``.zarr``
   store, a model folder), not a folder that holds an input.
2. An existing output is replaced only when asked (``overwrite=True``, ``--overwrite``, or the
   widget's question answered yes).
3. A folder is replaced only if voxseg wrote it (a model folder whose config.json names
   voxseg's format; a ``.zarr`` store voxseg marked) or it is empty; never a user's folder.

Every refusal is a :class:`VoxSegError` with one line, raised before any work is done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .card import is_complete_model, is_model_folder
from .errors import VoxSegError
from .folders import is_zarr_store, recover_folder
from .paths import WRITE_SUFFIXES, suffix_of

FILE, ZARR, MODEL = "file", "zarr", "model"
EXPORT = "export"  # a file an export writes; its caller checks the suffix
# Written into the attributes of every .zarr store voxseg writes: only those may be replaced.
ZARR_MARK = "napari_voxseg"
OVERWRITE_HINT = "--overwrite on the command line, overwrite=True in Python"


def kind_of(path) -> str:
    """FILE or ZARR, from the name (a model folder is named by its caller)."""
    return ZARR if Path(path).name.lower().endswith(".zarr") else FILE


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a link and its target are one thing
    except OSError:
        return None
    return st.st_dev, st.st_ino


def is_or_inside(path, folder) -> bool:
    """Whether ``path`` is ``folder`` or lies somewhere inside it. Compared by what is on
    disk (device and inode), so ``..``, symlinks, hard links and a case-insensitive file system
    cannot hide a match; ``path`` need not exist yet."""
    target = _identity(folder)
    if target is None:
        return False
    real = Path(os.path.realpath(os.path.abspath(path)))
    return any(_identity(p) == target for p in (real, *real.parents))


def _zarr_attributes(path: Path) -> dict:
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            with open(path / name, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        attrs = meta.get(key, {}) if key else meta
        return attrs if isinstance(attrs, dict) else {}
    return {}


def written_by_voxseg(path, kind: str) -> bool:
    """Whether the existing folder ``path`` is one voxseg wrote (and may replace)."""
    path = Path(path)
    if kind == MODEL:
        return is_model_folder(path)
    if kind == ZARR:
        return is_zarr_store(path) and ZARR_MARK in _zarr_attributes(path)
    return False


def _is_empty_folder(path: Path) -> bool:
    try:
        return path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


def _check_place(path: Path, kind: str) -> None:
    """The name and the folder it goes in; nothing about what is there yet."""
    parent = path.parent if str(path.parent) else Path(".")
    if kind == FILE:
        suffix = suffix_of(path)
        if suffix not in WRITE_SUFFIXES:
            raise VoxSegError(f"cannot write '{suffix or 'no suffix'}' files ({path.name}); "
                              f"name the output with one of {', '.join(WRITE_SUFFIXES)}")
    if kind == ZARR and path.suffix.lower() != ".zarr":
        raise VoxSegError(f"{path.name}: block-wise outputs are zarr stores; give a name ending in "
                          ".zarr")
    if not parent.is_dir():
        raise VoxSegError(f"folder {parent} does not exist; create it or choose another place")


def _check_existing(path: Path, kind: str, overwrite: bool) -> None:
    """What is already at ``path`` may be replaced only if voxseg wrote it and it is asked."""
    if kind == MODEL:
        recover_folder(path, is_complete_model)  # a save killed between its two renames
    elif kind == ZARR:
        recover_folder(path, is_zarr_store)
    if not os.path.lexists(path) or _is_empty_folder(path):
        return
    what = {MODEL: "a voxseg model", ZARR: "a zarr store that voxseg wrote"}.get(kind)
    if kind in (FILE, EXPORT):
        if path.is_dir():
            raise VoxSegError(f"{path} is a folder; give a file name for the output")
    elif not path.is_dir():
        raise VoxSegError(f"{path} exists and is a file, not {what}; choose a new folder name")
    elif not written_by_voxseg(path, kind):
        raise VoxSegError(f"{path} exists and is not {what}; choose a new folder name "
                          "(voxseg replaces only folders it wrote)")
    if not overwrite:
        held = {MODEL: " holds a voxseg model", ZARR: " holds a voxseg prediction"}.get(
            kind, " exists")
        raise VoxSegError(f"{path}{held}; choose another name, or allow replacing it "
                          f"({OVERWRITE_HINT})")


def check_output(path, kind: str | None = None, *, inputs: Iterable = (),
                 overwrite: bool = False) -> Path:
    """Check that ``path`` may be written as an output of ``kind`` (FILE, ZARR or MODEL;
    default from the name) by a job that reads ``inputs``; return it as a Path. Raises
    :class:`VoxSegError` (one line) before any work when it may not."""
    path = Path(path)
    kind = kind or kind_of(path)
    for source in filter(None, inputs):
        if is_or_inside(path, source):
            same = _identity(path) == _identity(source)
            where = "is" if same else "lies inside"
            raise VoxSegError(f"the output {path} {where} the input {source}; voxseg never "
                              "writes over what it reads: choose another output name")
        if is_or_inside(source, path):
            raise VoxSegError(f"the output {path} holds the input {source}; replacing it would "
                              "delete that input: choose a new name for the output")
    _check_place(path, kind)
    _check_existing(path, kind, overwrite)
    return path


def check_outputs(outputs: Sequence[tuple[object, str | None]], *, inputs: Iterable = (),
                  overwrite: bool = False) -> list[Path]:
    """:func:`check_output` for each ``(path, kind)`` (``None`` paths skipped), and no two
    outputs in the same place."""
    inputs = [i for i in inputs if i]
    checked = [check_output(p, k, inputs=inputs, overwrite=overwrite) for p, k in outputs if p]
    for i, a in enumerate(checked):
        for b in checked[i + 1:]:
            if os.path.realpath(a) == os.path.realpath(b) or is_or_inside(a, b) or \
                    is_or_inside(b, a):
                raise VoxSegError(f"two outputs are both {b}; give each output its own name")
    return checked
