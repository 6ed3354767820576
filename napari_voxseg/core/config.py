"""What decides a training run: :class:`TrainConfig`, what is planned from the data
(:func:`plan_config`: network, pooling, patch, batch), and what fine-tuning a saved model means
(:func:`fine_tune_config`, :func:`adopt_model`)."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from .data import DEFAULT_PERCENTILES
from .device import PRECISIONS
from .errors import VoxSegError
from .losses import check_focal_gamma, resolve_loss
from .models import divisors, plan_pooling
from .targets import check_weights_allowed
from .tasks import check_task, task_of
from .two_stage import resolve_two_stage

# Fine-tuning a trained model on new strokes starts from this fraction of the learning rate.
FINE_TUNE_LR_FACTOR = 0.1


@dataclass
class TrainConfig:
    """Everything that decides a training run. JSON-able; stored in the saved model."""

    iterations: int = 300
    # None: planned by plan_config from the volume and its voxel size (2 for the 3D network,
    # 8 one-slice patches for the 2D one; (32, 48, 48) for isotropic voxels, flatter and
    # wider for anisotropic ones, (1, 48, 48) for 2D: whole slices let a 2D network learn
    # where the strokes are rather than what they look like; Dice 0.97/0.74/0.60 against
    # 0.83/0.59/0.24 with (1, 64, 64) on the sample).
    batch_size: int | None = None
    patch_size: tuple[int, int, int] | None = None
    # auto: the 2D U-Net (slice by slice) for stacks with fewer slices than the 3D patch,
    # else the 3D U-Net, its pooling planned from the voxel size; or 3d / 2d.
    network: str = "auto"
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    task: str = "multiclass"  # multiclass | multilabel | regression
    loss: str | None = None  # None: the task's default (ce, bce, mse); see losses.LOSSES
    focal_gamma: float = 2.0
    boundary_weight: float = 10.0  # boundary_ce: w0, the extra weight right at a boundary
    boundary_sigma: float = 5.0  # boundary_ce: how fast it falls off, in voxels
    # "none" by default: inverse stroke frequency ("auto") pushes the boundaries of the rarer
    # classes outwards when strokes, not classes, are what is unbalanced.
    class_weights: str | Sequence[float] | None = "none"
    num_classes: int | None = None
    base_channels: int = 8
    depth: int = 3
    device: str = "auto"
    # auto: float16 autocast on CUDA, bfloat16 on a CPU that does it natively (AMX /
    # AVX512-BF16: about 3x faster steps), else float32. Weights and losses stay float32.
    precision: str = "auto"
    seed: int = 0
    num_threads: int | None = None
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    class_names: Sequence[str] | None = None
    # Two stages: stage 1 (a per-voxel classifier on the filter bank) is fitted on the
    # strokes; the U-Net gets its probabilities as input channels and its confident voxels as
    # pseudo-labels weighted below the strokes, and is kept only where it beats stage 1 on
    # held-out strokes (see two_stage.py). None (auto): on for multiclass with a loss that
    # weighs voxels (ce, class-weighted or not, and boundary_ce), off otherwise.
    two_stage: bool | None = None

    def checked(self) -> TrainConfig:
        """A copy with values checked; :class:`VoxSegError` on the first bad one."""
        cfg = copy.deepcopy(self)
        check_task(cfg.task)
        if cfg.precision not in PRECISIONS:
            raise VoxSegError(f"unknown precision {cfg.precision!r}; choose one of "
                              f"{', '.join(PRECISIONS)}")
        cfg.loss = resolve_loss(cfg.loss, cfg.task)
        check_weights_allowed(cfg.class_weights, cfg.task)
        cfg.two_stage = resolve_two_stage(cfg.two_stage, cfg.task, cfg.loss)
        check_focal_gamma(cfg.focal_gamma)
        for key, low, high, example in (("boundary_weight", 0, 1000, 10),
                                        ("boundary_sigma", 0.01, 1000, 5)):
            value = getattr(cfg, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
                    math.isfinite(value) and low <= value <= high):
                raise VoxSegError(f"{key.replace('_', ' ')} = {value!r}; give a number from {low} "
                                  f"to {high}, e.g. {example}")
        if cfg.network not in NETWORKS:
            raise VoxSegError(f"unknown network {cfg.network!r}; choose one of "
                              f"{', '.join(NETWORKS)}")
        for key, low in (("iterations", 1), ("batch_size", 1)):
            value = getattr(cfg, key)
            if key == "batch_size" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise VoxSegError(f"{key} = {value!r}; give a whole number >= {low}")
        if cfg.iterations > 1_000_000:
            raise VoxSegError(f"iterations = {cfg.iterations} is far too many; give at most "
                              "1000000")
        if not (isinstance(cfg.learning_rate, (int, float)) and 0 < cfg.learning_rate < 1):
            raise VoxSegError(f"learning rate {cfg.learning_rate!r} must be between 0 and 1, "
                              "e.g. 0.003")
        if not isinstance(cfg.depth, int) or not 1 <= cfg.depth <= 6:
            raise VoxSegError(f"depth = {cfg.depth!r}; give a whole number from 1 to 6")
        if cfg.patch_size is not None:
            try:
                patch = tuple(int(p) for p in cfg.patch_size)
            except (TypeError, ValueError):
                raise VoxSegError(f"patch size {cfg.patch_size!r} must be three whole numbers "
                                  "(Z, Y, X)") from None
            if len(patch) != 3 or min(patch) < 1:
                raise VoxSegError(f"patch size {patch} must be three sizes (Z, Y, X) "
                                  "of at least 1")
            cfg.patch_size = patch
            if math.prod(cfg.patch_size) * (cfg.batch_size or 1) > 256**3:
                raise VoxSegError(f"patch size {cfg.patch_size} x batch {cfg.batch_size or 1} "
                                  "is too large to train; use patches of at most 128 voxels "
                                  "a side")
        return cfg


NETWORKS = ("auto", "3d", "2d")
# The 3D patch for isotropic voxels and the 2D (one-slice) patch; batch sizes to match.
PATCH_3D, PATCH_2D = (32, 48, 48), (1, 48, 48)
BATCH_3D, BATCH_2D = 2, 8


def plan_config(config: TrainConfig, spatial_shape: Sequence[int],
                voxel_size: Sequence[float] | None = None, *,
                architecture: dict | None = None) -> tuple[TrainConfig, dict]:
    """Resolve what :class:`TrainConfig` leaves to the data: the network (auto: 2D for a
    stack with fewer slices than the 3D patch), its pooling for the voxel size (see
    :func:`~.models.plan_pooling`), the patch and the batch size. Returns the config with
    ``network``, ``patch_size`` and ``batch_size`` filled in, and the architecture's
    ``name``/``strides``/``kernels``. ``architecture``: a model's, when fine-tuning it (its
    network is kept). :class:`VoxSegError` when a given patch does not fit the network."""
    cfg = dataclasses.replace(config)
    shape = tuple(int(s) for s in spatial_shape)
    if architecture is not None:
        network = "2d" if architecture.get("name") == "unet2d" else "3d"
        layout = {k: architecture.get(k) for k in ("name", "strides", "kernels")}
        patch_3d = None
    else:
        strides, kernels = plan_pooling(voxel_size, cfg.depth)
        patch_3d = _anisotropic_patch(voxel_size, strides, cfg.depth)
        network = cfg.network
        if network == "auto":
            network = "2d" if shape[0] < (cfg.patch_size or patch_3d)[0] else "3d"
        layout = ({"name": "unet2d", "strides": None, "kernels": None} if network == "2d" else
                  {"name": "unet3d", "strides": strides, "kernels": kernels})
    divisor = divisors({**layout, "depth": cfg.depth})
    if cfg.patch_size is None:
        planned = PATCH_2D if network == "2d" else patch_3d or _anisotropic_patch(
            voxel_size, layout["strides"], cfg.depth)
        # No bigger than the volume (rounded up to what the network needs).
        cfg.patch_size = cast(tuple[int, int, int],
                              tuple(max(d, min(p, -(-s // d) * d))
                                    for p, s, d in zip(planned, shape, divisor)))
    elif any(p < d or p % d for p, d in zip(cfg.patch_size, divisor)):
        what = "the 2D network" if network == "2d" else f"a network of depth {cfg.depth}"
        raise VoxSegError(f"patch size {cfg.patch_size} must be three sizes (Z, Y, X), "
                          f"multiples of {divisor} for {what}")
    if cfg.batch_size is None:
        cfg.batch_size = BATCH_2D if network == "2d" else BATCH_3D
    cfg.network = network
    return cfg, layout


def _anisotropic_patch(voxel_size, strides, depth: int) -> tuple[int, int, int]:
    """The isotropic 3D patch, made flatter along coarse axes and wider along fine ones so
    that it covers a less lopsided piece of space, with about as many voxels."""
    divisor = divisors({"name": "unet3d", "strides": strides, "depth": depth})
    if voxel_size is None or strides is None:
        return cast(tuple[int, int, int],
                    tuple(max(d, p // d * d) for p, d in zip(PATCH_3D, divisor)))
    finest = min(voxel_size)
    shape = [p * finest / v for p, v in zip(PATCH_3D, voxel_size)]
    grow = (math.prod(PATCH_3D) / math.prod(shape)) ** (1 / 3)
    return cast(tuple[int, int, int], tuple(max(d, min(128, int(round(s * grow / d)) * d))
                                            for s, d in zip(shape, divisor)))


def adopt_model(config: TrainConfig, model) -> TrainConfig:
    """``config`` for training ``model`` further: the model's network (depth, widths) and
    intensity normalization, its patch unless ``config`` gives one, and its stages (two when
    it has a stage 1, else one)."""
    arch = model.config["architecture"]
    norm = model.config.get("normalization", {})
    return dataclasses.replace(
        config, depth=arch["depth"], base_channels=arch["base_channels"],
        patch_size=config.patch_size or tuple(model.config["patch_size"]),
        two_stage=True if model.config.get("stage1") else bool(config.two_stage),
        percentiles=(norm.get("low", DEFAULT_PERCENTILES[0]),
                     norm.get("high", DEFAULT_PERCENTILES[1])))


def fine_tune_config(model, **given) -> TrainConfig:
    """The config for fine-tuning ``model`` on new strokes: its task, loss, patch, network and
    normalization, and a tenth of the learning rate (:data:`FINE_TUNE_LR_FACTOR`), except
    what ``given`` sets (TrainConfig fields; None values are ignored)."""
    given = {k: v for k, v in given.items() if v is not None}
    base = {
        "task": task_of(model.config),
        "loss": model.config.get("loss", {}).get("name"),
        "learning_rate": TrainConfig.learning_rate * FINE_TUNE_LR_FACTOR,
        "patch_size": tuple(model.config["patch_size"]),
    }
    return adopt_model(TrainConfig(**{**base, **given}), model)
