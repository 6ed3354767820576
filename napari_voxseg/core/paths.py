"""File names: which suffixes voxseg reads and writes, and a name's suffix and stem."""

from __future__ import annotations

from pathlib import Path

READ_SUFFIXES = (".tif", ".tiff", ".npy", ".npz", ".nii", ".nii.gz")
WRITE_SUFFIXES = READ_SUFFIXES + (".zarr",)


def suffix_of(path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(path).suffix.lower()


def stem_of(path) -> str:
    """The file name without its suffix (both parts of .nii.gz)."""
    name = Path(path).name
    stem = name[: len(name) - len(suffix_of(path))] or name
    if suffix_of(path) in (".tif", ".tiff") and stem.lower().endswith(".ome"):
        stem = stem[:-4] or stem
    return stem
