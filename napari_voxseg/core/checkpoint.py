"""Save and load a model directory: ``model.safetensors`` + ``config.json``.

Loading never unpickles anything: the weights are safetensors and the config is JSON, checked
before any tensor is built. Saving writes a new directory under a temporary name beside the
target and renames it into place, so a crash leaves the old model or the new one, never half.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .card import CONFIG, FORMAT, FORMAT_VERSION, WEIGHTS, is_complete_model
from .device import resolve_device
from .errors import VoxSegError
from .folders import (
    fsync_dir,
    recover_folder,
    replace_folder,
    sweep_leftovers,
    temporary_folder_beside,
)
from .losses import TASKS
from .models import architecture_from, build_model, divisors
from .outputs import MODEL, check_output


def _recover(path: Path) -> None:
    """If a save was killed between its two renames, put the previous model back."""
    recover_folder(path, is_complete_model)


def check_model_folder(path, *, inputs=(), overwrite: bool = False) -> Path:
    """Check that :func:`save_model` may write ``path`` (see :mod:`.outputs`: never over an
    input, never over a folder voxseg did not write, over an earlier model only with
    ``overwrite``); call it before any long work."""
    return check_output(path, MODEL, inputs=inputs, overwrite=overwrite)


def save_model(model: torch.nn.Module, path, *, overwrite: bool = False) -> Path:
    """Write ``model`` (with its ``.config``) to the directory ``path``, atomically.

    ``path`` must be new, an empty folder or, with ``overwrite``, a model folder voxseg wrote;
    any other folder is refused (:class:`VoxSegError`), never replaced.

    The new model is written into ``.<name>.XXXX.tmp`` beside ``path``; an existing model is
    renamed to ``.<name>.XXXX.old``, the new one renamed to ``path``, then the old one removed.
    If the process dies between the two renames, :func:`load_model` renames the old one back, so
    a reader always finds the previous model or the new one, complete.
    """
    config = getattr(model, "config", None)
    if not config:
        raise VoxSegError("this model has no config; train it or load it with voxseg first")
    path = check_model_folder(path, overwrite=overwrite)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() and is_complete_model(path):  # leftovers of earlier killed saves
        sweep_leftovers(path)
    tmp = temporary_folder_beside(path)
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        with open(tmp / CONFIG, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / WEIGHTS, "rb") as f:
            os.fsync(f.fileno())
        fsync_dir(tmp)
        replace_folder(tmp, path)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _require(config: dict, key: str, kind, where: str = "config.json"):
    if key not in config:
        raise VoxSegError(f"{where} has no '{key}'; this is not a complete voxseg model — "
                          "save it again with voxseg")
    value = config[key]
    if not isinstance(value, kind):
        raise VoxSegError(f"{where} has a bad '{key}' ({value!r}); save the model again")
    return value


def check_config(config) -> dict:
    """Validate a model config (from JSON) before anything is built from it."""
    if not isinstance(config, dict):
        raise VoxSegError("config.json does not hold an object; this is not a voxseg model")
    if config.get("format") != FORMAT:
        raise VoxSegError(f"config.json is not a {FORMAT} config (format "
                          f"{config.get('format')!r}); give a folder saved by voxseg")
    version = config.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise VoxSegError(f"config.json has a bad format_version {version!r}; save it again")
    if version > FORMAT_VERSION:
        raise VoxSegError(f"this model was saved by a newer napari-voxseg (format {version}, "
                          f"this one reads {FORMAT_VERSION}); upgrade napari-voxseg")
    arch = architecture_from(_require(config, "architecture", dict))
    classes = _require(config, "classes", list)
    if len(classes) != arch["num_classes"]:
        raise VoxSegError(f"config.json lists {len(classes)} classes but the network has "
                          f"{arch['num_classes']}; the model folder is inconsistent")
    task = config.get("task", "multiclass")
    if task not in TASKS:
        raise VoxSegError(f"config.json has an unknown task {task!r}; this napari-voxseg knows "
                          f"{', '.join(TASKS)}: upgrade it, or save the model again")
    lowest = {"multiclass": 2, "multilabel": 1, "regression": 1}[task]
    if arch["num_classes"] < lowest or (task == "regression" and arch["num_classes"] != 1):
        raise VoxSegError(f"config.json: a {task} network with {arch['num_classes']} outputs; "
                          "the model folder is inconsistent")
    scale = config.get("target_scale")
    if task == "regression" and scale is not None and not (
            isinstance(scale, dict) and all(isinstance(scale.get(k), (int, float))
                                            and math.isfinite(scale[k]) for k in ("mean", "std"))
            and scale["std"] > 0):
        raise VoxSegError(f"config.json has a bad target_scale {scale!r}; save the model again")
    patch = _require(config, "patch_size", list)
    if len(patch) != 3 or not all(isinstance(p, int) and p >= d and p % d == 0 and p <= 1024
                                  for p, d in zip(patch, divisors(arch))):
        raise VoxSegError(f"config.json has a bad patch_size {patch}; save the model again")
    norm = _require(config, "normalization", dict)
    low, high = norm.get("low"), norm.get("high")
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float))
            and 0 <= low < high <= 100):
        raise VoxSegError(f"config.json has bad normalization percentiles {low!r}, {high!r}")
    voxel = config.get("voxel_size")
    if voxel is not None and not (isinstance(voxel, list) and len(voxel) == 3 and all(
            isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in voxel)):
        raise VoxSegError(f"config.json has a bad voxel_size {voxel!r}; save the model again")
    return {**config, "architecture": arch, "task": task}


def load_model(path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a model directory saved by :func:`save_model`; the module has ``.config``."""
    path = Path(path)
    _recover(path)
    if not path.exists():
        raise VoxSegError(f"model folder {path} does not exist; give the folder that "
                          "'train --out' or 'Save model' wrote")
    if not path.is_dir():
        raise VoxSegError(f"{path} is a file, not a model folder; give the folder that holds "
                          f"{CONFIG} and {WEIGHTS}")
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
            raise VoxSegError(f"model folder {path} has no {name} (it holds {found}); voxseg "
                              "models are saved as config.json + model.safetensors")
    try:
        with open(path / CONFIG, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VoxSegError(f"{path / CONFIG} is not readable JSON ({exc}); the model is "
                          "damaged, save it again") from None
    config = check_config(config)
    model = build_model(config["architecture"])
    try:
        state = load_file(str(path / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise VoxSegError(f"{path / WEIGHTS} is not a readable safetensors file ({exc}); "
                          "voxseg loads only safetensors weights, save the model again") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise VoxSegError(f"{path / WEIGHTS} does not match config.json (missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}); the model is damaged")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise VoxSegError(f"{path / WEIGHTS}: weight {key} has shape "
                              f"{tuple(state[key].shape)}, config.json needs "
                              f"{tuple(tensor.shape)}; the model is damaged")
        if not torch.isfinite(state[key].float()).all():
            raise VoxSegError(f"{path / WEIGHTS}: weight {key} holds NaN or inf; the model is "
                              "damaged, train it again")
    model.load_state_dict(state)
    model.config = config
    return model.to(resolve_device(device)).eval()
