"""Folder-shaped outputs (model folders, .zarr stores) written atomically.

A folder is written under a temporary name beside its target (``.<name>.XXXX.tmp``) and moved
into place by :func:`replace_folder`; an earlier folder at the target is renamed aside
(``.<name>.XXXX.old``) first and removed after. Whether voxseg may replace a folder at all is
decided before, by :mod:`napari_voxseg.core.outputs`.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def is_zarr_store(path: Path) -> bool:
    """Whether the folder ``path`` is a zarr store (v2 or v3, array or group)."""
    return any((Path(path) / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup"))


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (the names of what was renamed into it) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def folder_leftovers(path: Path, suffix: str) -> list[Path]:
    """Folders an atomic write of the folder ``path`` leaves while it runs:
    ``.<name>.*.tmp`` / ``.<name>.*.old``, newest first."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*{suffix}"),
                  key=lambda p: p.stat().st_mtime, reverse=True)


def recover_folder(path: Path, complete: Callable[[Path], bool]) -> None:
    """If a write of the folder ``path`` was killed between its two renames (see
    :func:`replace_folder`), put the previous, complete folder back."""
    if path.exists():
        return
    for old in folder_leftovers(path, ".old"):
        if complete(old):
            os.replace(old, path)
            return


def sweep_leftovers(path: Path) -> None:
    """Remove what earlier killed writes of ``path`` left (call when ``path`` is whole)."""
    for stale in folder_leftovers(path, ".tmp") + folder_leftovers(path, ".old"):
        shutil.rmtree(stale, ignore_errors=True)


def temporary_folder_beside(path: Path) -> Path:
    """A new empty folder ``.<name>.XXXX.tmp`` beside ``path``, to write into and then move."""
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))


def replace_folder(tmp: Path, path: Path) -> None:
    """Move the finished folder ``tmp`` (beside ``path``) to ``path``. An existing ``path`` is
    renamed to ``.<name>.XXXX.old`` first and removed after: two renames in one folder, so a
    kill at any moment leaves the previous folder (or its .old, which
    :func:`recover_folder` puts back) or the new one, never half of one."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
        os.rmdir(old)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
