"""The engine: numpy and torch only, never napari or Qt.

    from napari_voxseg.core import load_model, predict
    model = load_model("model_dir")    # torch.nn.Module with model.config
    labels = predict(model, image)     # (Z, Y, X) or (C, Z, Y, X) in, labels 1..K out

Names are imported when first used, so that a part that needs no torch (reading a file for
napari, say) does not load it.
"""

from __future__ import annotations

import importlib
import sys
import types

_HOMES = {
    "load_model": "checkpoint", "save_model": "checkpoint",
    "check_image": "data", "normalize": "data",
    "check_labels": "targets", "class_weights": "targets",
    "resolve_device": "device",
    "VoxSegError": "errors", "StoppedEarly": "errors",
    "read_volume": "files", "write_volume": "files",
    "PredictEvent": "infer", "PredictResult": "infer", "iter_predict": "infer",
    "predict": "infer",
    "dice_per_class": "metrics", "iou_per_class": "metrics",
    "build_model": "models",
    "TrainConfig": "train", "TrainEvent": "train", "TrainResult": "train",
    "PreviewEvent": "events", "ValidationEvent": "events",
    "iter_train": "train", "run_to_end": "train", "train": "train",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOMES))


class _Core(types.ModuleType):
    """Importing the submodule ``core.train`` would bind the name ``train`` to that module;
    the package's ``train`` stays the function, as when the names were imported eagerly."""

    def __setattr__(self, name, value):
        if name in _HOMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Core
