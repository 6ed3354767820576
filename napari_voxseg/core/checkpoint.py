"""Save and load a model directory: ``model.safetensors`` + ``config.json`` (+ a two-stage
model's ``stage1.safetensors``, its stage 1's arrays; ``config.json`` holds its settings).

Loading never unpickles anything: the weights are safetensors and the config is JSON, checked
before any tensor is built. Saving writes a new directory under a temporary name beside the
target and renames it into place, so a crash leaves the old model or the new one, never half.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .card import CONFIG, FORMAT, STAGE1_WEIGHTS, WEIGHTS, ModelCard, is_complete_model
from .device import resolve_device
from .errors import VoxSegError
from .folders import (
    as_if_created,
    fsync_dir,
    recover_folder,
    replace_folder,
    sweep_leftovers,
    temporary_folder_beside,
)
from .models import attach, build_model
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
        files = [WEIGHTS]
        stage1 = getattr(model, "stage1", None)
        if stage1 is not None:
            save_file(stage1.state_dict(), str(tmp / STAGE1_WEIGHTS),
                      metadata={"format": FORMAT})
            files.append(STAGE1_WEIGHTS)
        with open(tmp / CONFIG, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        for name in files:
            as_if_created(tmp / name)  # safetensors writes its files private (0600)
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        replace_folder(tmp, path)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def check_config(config) -> dict:
    """Validate a model config (from JSON) before anything is built from it."""
    return ModelCard.from_dict(config).to_dict()


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
    attach(model, config=config)
    if config.get("stage1") is not None:
        attach(model, stage1=_load_stage1(path, config["stage1"]))
    return model.to(resolve_device(device)).eval()


def _load_stage1(path: Path, metadata: dict):
    """A two-stage model's stage 1, from its safetensors file and config.json's settings."""
    from .stage1_multilabel import load_stage1

    file = path / STAGE1_WEIGHTS
    if not file.is_file():
        raise VoxSegError(f"model folder {path} has no {STAGE1_WEIGHTS}, which its config.json "
                          "(a two-stage model) needs; save the model again")
    try:
        state = load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise VoxSegError(f"{file} is not a readable safetensors file ({exc}); the model is "
                          "damaged, save it again") from None
    return load_stage1(state, metadata)
