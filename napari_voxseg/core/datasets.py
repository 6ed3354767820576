"""Folders of volumes: which files of a folder are images to predict, and (for training) which
label file goes with which image.

The layout is nnU-Net's, in any format the readers take, with its folder names or plain ones::

    DIR/images/a.tif      DIR/labels/a.tif          (or imagesTr/ and labelsTr/)
    DIR/images/b.nii.gz   DIR/labels/b.nii.gz       (nnU-Net's b_0000.nii.gz also pairs)

An image and its labels share a stem (the name without its suffix, both parts of
``.nii.gz``; an image's nnU-Net channel suffix ``_0000`` aside). Prediction takes
``images/``, else ``imagesTs/``, else ``imagesTr/``, else the folder itself.

Hidden files (``.DS_Store``, editors' backups starting with ``.``) are passed
over; any other file voxseg cannot read is refused before any work, naming it, since a folder
with a stray file is more often a mistake than a wish.
"""

from __future__ import annotations

from pathlib import Path

from .errors import VoxSegError
from .paths import READ_SUFFIXES, stem_of, suffix_of

IMAGES, LABELS = ("images", "imagesTr"), ("labels", "labelsTr")
_PREDICT = ("images", "imagesTs", "imagesTr")


def _first(folder: Path, names) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def _volumes_in(folder: Path) -> list[Path]:
    """The readable volumes of ``folder`` (files, and ``.zarr`` stores), sorted by name."""
    found, foreign = [], []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if suffix_of(entry) == ".zarr" and entry.is_dir():
            found.append(entry)
        elif entry.is_file() and suffix_of(entry) in READ_SUFFIXES:
            found.append(entry)
        else:
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise VoxSegError(f"{folder} holds {shown}, which voxseg cannot read; keep only volumes "
                          f"({', '.join(READ_SUFFIXES + ('.zarr',))}) there")
    return found


def _by_stem(paths: list[Path], folder: Path, channel_suffix: bool = False) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for path in paths:
        stem = stem_of(path)
        if channel_suffix and stem.endswith("_0000"):
            stem = stem[:-5]
        if stem in stems:
            raise VoxSegError(f"{folder} holds both {stems[stem].name} and {path.name}; give "
                              "each volume its own name")
        stems[stem] = path
    return stems


def dataset_images(folder) -> list[Path]:
    """The images of a dataset folder: those in ``folder/images`` when it has one, else the
    volumes in ``folder`` itself."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "no such folder"
        raise VoxSegError(f"--dataset {folder}: {what}; give a folder of volumes, or one with "
                          "images/ (and labels/)")
    where = _first(folder, _PREDICT) or folder
    images = _volumes_in(where)
    if not images:
        raise VoxSegError(f"--dataset {folder}: no volumes in {where}")
    _by_stem(images, where)
    return images


def dataset_pairs(folder) -> list[tuple[Path, Path]]:
    """The (image, labels) pairs of a dataset folder with ``images/`` and ``labels/`` whose
    files share their stems; a missing or extra label file is refused, naming it."""
    folder = Path(folder)
    inner, outer = _first(folder, IMAGES), _first(folder, LABELS)
    if inner is None or outer is None:
        raise VoxSegError(f"--dataset {folder}: a training dataset holds two folders, "
                          "images/ and labels/ (or nnU-Net's imagesTr/ and labelsTr/), with "
                          "files of the same names")
    images = _by_stem(_volumes_in(inner), inner, channel_suffix=True)
    labels = _by_stem(_volumes_in(outer), outer)
    if not images:
        raise VoxSegError(f"--dataset {folder}: {inner.name}/ holds no volumes")
    missing = [images[s].name for s in images if s not in labels]
    if missing:
        raise VoxSegError(f"--dataset {folder}: no labels for {', '.join(missing[:3])}"
                          f"{' ...' if len(missing) > 3 else ''}; add {outer.name}/<same name> "
                          "(strokes: 0 = not annotated) or move the image out")
    extra = [labels[s].name for s in labels if s not in images]
    if extra:
        raise VoxSegError(f"--dataset {folder}: {outer.name}/{extra[0]} has no image of that "
                          f"name in {inner.name}/; rename or remove it")
    return [(images[s], labels[s]) for s in images]
