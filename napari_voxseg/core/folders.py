"""Folder-shaped outputs (model folders, .zarr stores) written atomically.

Temporary files and folders (``tempfile.mkstemp``/``mkdtemp``) are private (0600/0700) and
the rename keeps that mode, so every output made from one gets the mode a plain ``open``/
``mkdir`` would give under the user's umask (:func:`as_if_created`), for colleagues on a shared
drive to read.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc), else set and
    put back at once."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_if_created(path, folder: bool = False) -> None:
    """Give ``path`` the permissions a new file (0666) or folder (0777) gets under the umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


@contextmanager
def replacing_file(path: Path, suffix: str = ".tmp") -> Iterator[str]:
    """Write a whole file or none: yields a temporary file's name beside ``path`` (with the
    permissions a new file gets) to write; when the block ends it is synced and renamed onto
    ``path``, and when the block fails it is removed."""
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=parent)
    os.close(fd)
    try:
        as_if_created(tmp)  # mkstemp's file is private; the output is not
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def temporary_folder_beside(path: Path) -> Path:
    """A new empty folder ``.<name>.XXXX.tmp`` beside ``path``, to write into and then move,
    with the permissions a plain ``mkdir`` would give it."""
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    as_if_created(tmp, folder=True)
    return tmp


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
