"""What makes a folder a voxseg model, and what its config.json says: the :class:`ModelCard`.

A saved model is a folder holding ``model.safetensors`` (the weights) and ``config.json`` (this
card as JSON); a two-stage model also ``stage1.safetensors`` (its stage 1, see
:mod:`.two_stage`). ``model.config`` is the card's dict. :meth:`ModelCard.from_dict` is the one
place that checks a config before anything is built from it; folders saved by earlier versions
(without ``task``, ``voxel_size``, ``strides``...) still load. Free of torch at import, so that
the output rules (:mod:`.outputs`) can tell a model folder from a user's folder cheaply.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import VoxSegError
from .tasks import TASKS, task_info, task_of

FORMAT = "napari-voxseg-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STAGE1_WEIGHTS = "stage1.safetensors"  # two-stage models only


def is_complete_model(path: Path) -> bool:
    """Whether the folder holds both files of a saved model."""
    return (Path(path) / CONFIG).is_file() and (Path(path) / WEIGHTS).is_file()


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` is a folder that voxseg saved a model into: its config.json names
    voxseg's model format, and nothing else is in it but the model's files."""
    path = Path(path)
    try:
        with open(path / CONFIG, encoding="utf-8") as f:
            config = json.load(f)
        names = {p.name for p in path.iterdir()}
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return (isinstance(config, dict) and config.get("format") == FORMAT
            and names <= {CONFIG, WEIGHTS, STAGE1_WEIGHTS})


def image_channels(config: dict) -> int:
    """The image channels a model takes: its network's input channels, less stage 1's class
    probabilities for a two-stage model."""
    stage1 = config.get("stage1")
    return config["architecture"]["in_channels"] - (stage1["num_classes"] if stage1 else 0)


@dataclass
class ModelCard:
    """Everything a saved model says about itself (config.json)."""

    architecture: dict  # models.architecture_from: name, channels, classes, depth, widths...
    classes: list  # [{"id": 1, "name": ...}, ...], one per network output
    normalization: dict  # {"method": "percentile", "low": ..., "high": ...}
    patch_size: list  # (Z, Y, X) it was trained on, and predicts with
    task: str = "multiclass"
    loss: dict = field(default_factory=dict)  # {"name": ..., and the loss's settings}
    target_scale: dict | None = None  # regression: {"mean", "std"} of the target
    voxel_size: list | None = None  # (Z, Y, X) of the training image, when known
    training: dict = field(default_factory=dict)  # settings, strokes, history
    versions: dict = field(default_factory=dict)  # of voxseg, torch, numpy, Python
    stage1: dict | None = None  # a two-stage model's Stage1.metadata(); None: one stage
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept

    def to_dict(self) -> dict:
        """The config.json dict (``model.config``)."""
        order = ("format", "format_version", "architecture", "task", "loss", "classes",
                 "target_scale", "normalization", "patch_size", "voxel_size", "training",
                 "versions")
        card = {key: getattr(self, key) for key in order}
        if self.stage1 is not None:
            card["stage1"] = self.stage1
        return {**card, **self.extra}

    @classmethod
    def from_dict(cls, config) -> ModelCard:
        """A checked card from a config.json dict; :class:`VoxSegError` (one line) when it
        is not a voxseg model or is inconsistent."""
        _check_format(config)
        card = cls(
            architecture=_architecture(config), classes=_require(config, "classes", list),
            normalization=_normalization(config), patch_size=_require(config, "patch_size", list),
            task=task_of(config), loss=config.get("loss") or {},
            target_scale=config.get("target_scale"), voxel_size=config.get("voxel_size"),
            training=config.get("training") or {}, versions=config.get("versions") or {},
            format_version=config["format_version"], stage1=config.get("stage1"),
            extra={k: v for k, v in config.items() if k not in _KNOWN})
        card._check_outputs()
        card._check_sizes()
        card._check_stage1()
        return card

    def _check_stage1(self) -> None:
        stage1, arch = self.stage1, self.architecture
        if stage1 is None:
            return
        if not (isinstance(stage1, dict) and self.task in ("multiclass", "multilabel")
                and stage1.get("num_classes") == arch["num_classes"]
                and isinstance(stage1.get("channels"), int)
                and stage1["channels"] + stage1["num_classes"] == arch["in_channels"]):
            raise VoxSegError("config.json's stage1 does not match its network (classes, "
                              "channels); the model folder is inconsistent, save it again")

    def _check_outputs(self) -> None:
        outputs = self.architecture["num_classes"]
        if len(self.classes) != outputs:
            raise VoxSegError(f"config.json lists {len(self.classes)} classes but the network "
                              f"has {outputs}; the model folder is inconsistent")
        if self.task not in TASKS:
            raise VoxSegError(f"config.json has an unknown task {self.task!r}; this "
                              f"napari-voxseg knows {', '.join(TASKS)}: upgrade it, or save the "
                              "model again")
        task = task_info(self.task)
        if outputs < task.min_outputs or (task.single_output and outputs != 1):
            raise VoxSegError(f"config.json: a {self.task} network with {outputs} outputs; "
                              "the model folder is inconsistent")
        scale = self.target_scale
        if task.single_output and scale is not None and not (
                isinstance(scale, dict) and all(_finite(scale.get(k)) for k in ("mean", "std"))
                and scale["std"] > 0):
            raise VoxSegError(f"config.json has a bad target_scale {scale!r}; save the model "
                              "again")

    def _check_sizes(self) -> None:
        from .models import divisors  # torch: only when a model is really loaded

        patch = self.patch_size
        if len(patch) != 3 or not all(isinstance(p, int) and p >= d and p % d == 0
                                      and p <= 1024
                                      for p, d in zip(patch, divisors(self.architecture))):
            raise VoxSegError(f"config.json has a bad patch_size {patch}; save the model again")
        voxel = self.voxel_size
        if voxel is not None and not (isinstance(voxel, list) and len(voxel) == 3 and all(
                _finite(v) and v > 0 for v in voxel)):
            raise VoxSegError(f"config.json has a bad voxel_size {voxel!r}; save the model "
                              "again")


_KNOWN = {f.name for f in fields(ModelCard)} - {"extra"}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _require(config: dict, key: str, kind):
    if key not in config:
        raise VoxSegError(f"config.json has no '{key}'; this is not a complete voxseg model — "
                          "save it again with voxseg")
    value = config[key]
    if not isinstance(value, kind):
        raise VoxSegError(f"config.json has a bad '{key}' ({value!r}); save the model again")
    return value


def _check_format(config) -> None:
    if not isinstance(config, dict):
        raise VoxSegError("config.json does not hold an object; this is not a voxseg model")
    if config.get("format") != FORMAT:
        raise VoxSegError(f"config.json is not a {FORMAT} config (format "
                          f"{config.get('format')!r}); give a folder saved by voxseg")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise VoxSegError(f"config.json has a bad format_version {version!r}; save it again")
    if version > FORMAT_VERSION:
        raise VoxSegError(f"this model was saved by a newer napari-voxseg (format {version}, "
                          f"this one reads {FORMAT_VERSION}); upgrade napari-voxseg")


def _architecture(config: dict) -> dict:
    from .models import architecture_from  # torch: only when a model is really loaded

    return architecture_from(_require(config, "architecture", dict))


def _normalization(config: dict) -> dict:
    norm = _require(config, "normalization", dict)
    low, high = norm.get("low"), norm.get("high")
    if not (_finite(low) and _finite(high) and 0 <= low < high <= 100):
        raise VoxSegError(f"config.json has bad normalization percentiles {low!r}, {high!r}")
    return norm
