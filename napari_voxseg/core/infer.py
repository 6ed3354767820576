"""Sliding-window prediction with Gaussian blending.

Tiles of the training patch size lie on one grid over the whole volume, overlapping by
``overlap``; each tile's softmax is weighted by a Gaussian importance map (high in the middle,
low at the edges) and the weighted sum is divided by the summed weights, so neighbouring tiles
fade into each other without seams. Any block of the volume (a live preview's region, or one
block of a volume larger than memory) is predicted from the tiles of that same grid that meet
it, so predicting a volume block by block gives exactly what predicting it whole gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from .card import image_channels
from .data import check_image, normalize, normalize_with, percentiles
from .device import inference_dtype, resolve_device
from .errors import VoxSegError
from .models import divisors, model_config
from .resample import resample_factors, resize, voxel_mismatch  # noqa: F401
from .tasks import check_extra_outputs
from .tiles import TileGrid, concrete, gaussian_importance, tile_starts  # noqa: F401

# Tiles overlap by a quarter: on the sample, 2.4x faster than by half with the same Dice
# (0.995 / 0.925 / 0.949 against 0.994 / 0.929 / 0.927; benchmarks/predict_speed.py).
DEFAULT_OVERLAP = 0.25

_Event = TypeVar("_Event")
_Result = TypeVar("_Result")


def run_to_end(generator: Generator[_Event, Any, _Result],
               on_event: Callable[[_Event], object] | None = None) -> _Result:
    """Exhaust a generator and return its return value; ``on_event(event)`` for each event
    it yields (e.g. to draw progress)."""
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


@dataclass
class PredictEvent:
    done: int  # tiles done
    total: int


@dataclass
class PredictResult:
    """What a prediction gives, by task.

    multiclass: ``labels`` (Z, Y, X) 1..K. multilabel: ``labels`` (K, Z, Y, X), per class 1 =
    absent, 2 = present (the annotation values, so a prediction can be edited and trained on).
    regression: ``values`` (Z, Y, X) float32 in the target's units. ``probabilities``: softmax
    or sigmoid (K, Z, Y, X) float32, when asked for. ``uncertainty``: (Z, Y, X) float32 in
    [0, 1], the entropy of the probabilities divided by its largest possible value (for
    multi-label, the mean over classes of the binary entropy), when asked for. All None when
    cancelled.
    """

    labels: np.ndarray | None
    probabilities: np.ndarray | None = None
    cancelled: bool = False
    values: np.ndarray | None = None
    task: str = "multiclass"
    uncertainty: np.ndarray | None = None
    objects: np.ndarray | None = None  # instance labels of chosen classes, when asked for
    object_classes: tuple | None = None  # those classes (multi-label: one objects layer each)

    @property
    def output(self) -> np.ndarray | None:
        """The labels, or for regression the values."""
        return self.values if self.task == "regression" else self.labels


def iter_predict(
    model: torch.nn.Module,
    image,
    *,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    probabilities: bool = False,
    uncertainty: bool = False,
    should_stop: Callable[[], bool] | None = None,
    tile_size: Sequence[int] | None = None,
    region: Sequence[slice] | None = None,
    precision: str = "auto",
    voxel_size: Sequence[float] | None = None,
    resample: bool = False,
) -> Generator[PredictEvent, None, PredictResult]:
    """Predict a whole volume tile by tile; yield a :class:`PredictEvent` per batch of tiles.

    ``image`` is ``(Z, Y, X)`` or ``(C, Z, Y, X)``. Returns a :class:`PredictResult`; for the
    default multi-class task, labels 1..K (uint8) of the image's spatial shape. ``region``
    (three slices, Z, Y, X): predict only that block, from the tiles that meet it, and return
    results of the block's shape (equal to that block of the whole prediction).
    ``precision``: ``auto`` runs the network in float16 on CUDA and in bfloat16 on a CPU with
    native bfloat16 (Intel AMX, AVX512-BF16), else float32; blending is always float32.

    ``resample`` with the image's ``voxel_size``: when it differs from the voxel size the model
    was trained at (see :func:`voxel_mismatch`), the image is resampled (trilinear) to the
    model's voxel size, predicted there, and the probabilities (or values) resampled back, so
    the results have the image's shape. Not with ``region``.
    """
    config = model_config(model)
    arch = config["architecture"]
    image = check_image(image, channels=image_channels(config))
    norm = config["normalization"]
    volume = normalize(image, norm["low"], norm["high"])
    task = config.get("task", "multiclass")
    factors = resample_factors(config.get("voxel_size"), voxel_size) if resample else None
    shape = volume.shape[1:]
    read = None
    if getattr(model, "stage1", None) is not None:
        read = stage1_reader(model, image, lambda s: volume[(slice(None), *s)],
                             voxel_size=voxel_size, device=device)
    if factors is not None:
        if region is not None:
            raise VoxSegError("a region cannot be predicted with resampling; predict the "
                              "whole volume, or leave resampling off")
        if read is not None:
            volume, read = read(tuple(slice(0, n) for n in shape)), None
        scaled = tuple(max(1, int(round(n * f))) for n, f in zip(shape, factors))
        volume = resize(torch.from_numpy(volume), scaled).numpy()
    result = yield from iter_blend(
        model, None if read else volume, read=read, spatial_shape=shape,
        pad_value=float(volume.min()), task=task, divisor=divisors(arch),
        patch_size=tile_size or config["patch_size"], target_scale=config.get("target_scale"),
        region=region, overlap=overlap, batch_size=batch_size, device=device,
        # Resampled: the probabilities (or values) go back to the image's grid, and the
        # labels and uncertainty are made from them there.
        probabilities=probabilities or (factors is not None and task != "regression"),
        uncertainty=uncertainty and factors is None, should_stop=should_stop,
        precision=precision)
    if factors is None or result.cancelled:
        return result
    if task == "regression":
        assert result.values is not None  # a regression result, not cancelled
        values = resize(torch.from_numpy(result.values[None]), shape)[0]
        return PredictResult(labels=None, values=values.numpy(), task=task)
    probs = resize(torch.from_numpy(result.probabilities), shape)
    return _finish(probs, torch.ones(shape), task, None, probabilities, uncertainty)


def stage1_reader(model, image, read_image: Callable[[tuple], np.ndarray], *,
                  voxel_size: Sequence[float] | None = None, bounds: np.ndarray | None = None,
                  device=None) -> Callable[[tuple], np.ndarray]:
    """A two-stage model's input, as ``iter_blend``'s ``read(spatial_slices)``: the normalized
    image block (``read_image``), then ``model.stage1``'s probabilities of that block, whose
    filters read their halo from ``image`` ((C, Z, Y, X), any array-like): any block equals
    that block of the whole. ``voxel_size``: the image's (default: the model's). ``bounds``:
    stage 1's normalization of ``image`` (default: from its percentiles)."""
    stage1 = model.stage1
    if bounds is None:
        bounds = stage1.bounds_of(image)
    device = next(model.parameters()).device if device is None else resolve_device(device)

    def read(slices):
        probs = stage1.predict_proba(image, region=slices, voxel_size=voxel_size,
                                     bounds=bounds, device=device)
        return np.concatenate([np.asarray(read_image(slices), dtype=np.float32), probs])

    return read


def iter_blend(
    model: torch.nn.Module,
    volume,
    *,
    task: str,
    divisor: Sequence[int],
    patch_size: Sequence[int],
    target_scale: dict | None = None,
    region: Sequence[slice] | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    probabilities: bool = False,
    uncertainty: bool = False,
    should_stop: Callable[[], bool] | None = None,
    pad_value: float | None = None,
    read: Callable[[tuple[slice, ...]], np.ndarray] | None = None,
    spatial_shape: Sequence[int] | None = None,
    precision: str = "auto",
) -> Generator[PredictEvent, None, PredictResult]:
    """The sliding window over an already normalized ``(C, Z, Y, X)`` volume; see
    :func:`iter_predict`. Training calls it for its live previews with the model as it is.

    For volumes not in memory, give ``read(spatial_slices) -> normalized (C, z, y, x)`` and
    ``spatial_shape`` instead of ``volume`` (None), and the ``pad_value`` (the normalized
    minimum) that pads a volume smaller than a tile.
    """
    check_extra_outputs(task, probabilities, uncertainty)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise VoxSegError(f"batch size {batch_size!r} must be a whole number >= 1")
    if read is None:
        spatial_shape = volume.shape[1:]
        pad_value = float(volume.min()) if pad_value is None else pad_value

        def read(slices):
            return volume[(slice(None), *slices)]
    elif spatial_shape is None:
        raise VoxSegError("iter_blend reads a volume through read() only with its "
                          "spatial_shape; give both")
    grid = TileGrid.of(spatial_shape, patch_size, divisor, overlap)
    region = concrete(region, spatial_shape)
    corners = grid.tiles_meeting(region)
    patch = grid.patch
    # The input that those tiles cover, read once (padded where it passes the volume's end).
    box = tuple(slice(min(c[a] for c in corners), max(c[a] for c in corners) + patch[a])
                for a in range(3))
    inside = tuple(slice(b.start, min(b.stop, n)) for b, n in zip(box, spatial_shape))
    block = np.asarray(read(inside), dtype=np.float32)
    want = tuple(b.stop - b.start for b in box)
    if block.shape[1:] != want:
        padded = np.full((block.shape[0], *want), pad_value, dtype=np.float32)
        padded[(slice(None), *(slice(0, n) for n in block.shape[1:]))] = block
        block = padded
    source = torch.from_numpy(np.ascontiguousarray(block))

    device = next(model.parameters()).device if device is None else resolve_device(device)
    model.to(device).eval()
    amp = inference_dtype(device, precision, task)
    half = half_sums(device, task)
    while True:
        result = yield from _blend(model, source, box, corners, patch, region, task, device,
                                   amp, torch.float16 if half else torch.float32, batch_size,
                                   should_stop)
        if result is None:
            return PredictResult(labels=None, cancelled=True, task=task)
        scores, weights = result
        if not half or (bool(torch.isfinite(scores).all()) and bool((weights > 0).all())):
            break
        half = False  # overflowed or underflowed: once more in float32
    return _finish(scores.float(), weights.float(), task, target_scale, probabilities,
                   uncertainty)


# The smallest weight a tile gives a voxel when the sums are float16: the Gaussian window is
# 3e-11 at a 3D tile's corners, which float16 (smallest normal 6e-5) rounds to 0, and a voxel
# that only tile corners cover would be 0 / 0.
HALF_WINDOW_FLOOR = 2.0**-10


def half_sums(device: torch.device, task: str) -> bool:
    """Whether the blend sums are kept in float16: on a GPU (half the memory), for
    probabilities; regression values are not bounded like them and stay float32, and a sum
    that overflows is redone in float32."""
    return device.type == "cuda" and task != "regression"


def _accumulators(channels, shape, dtype, device):
    """Blend sums on ``device``, or in CPU memory when the GPU has no room for them."""
    try:
        return (torch.zeros((channels, *shape), dtype=dtype, device=device),
                torch.zeros(shape, dtype=dtype, device=device))
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return (torch.zeros((channels, *shape), dtype=torch.float32),
                torch.zeros(shape, dtype=torch.float32))


def _blend(model, source, box, corners, patch, region, task, device, amp, acc_dtype,
           batch_size, should_stop):
    """Run the tiles through the network and add them up; (scores, weights), or None when
    stopped. On a GPU out of memory, the batch is halved and tried again."""
    region_shape = tuple(r.stop - r.start for r in region)
    window = torch.tensor(gaussian_importance(patch), device=device)
    if acc_dtype == torch.float16:
        window = window.clamp_min(HALF_WINDOW_FLOOR)
    scores = weights = None
    first = 0
    with torch.inference_mode():
        while first < len(corners):
            if should_stop is not None and should_stop():
                return None
            chunk = corners[first : first + batch_size]
            # CPU convolutions of a batch of one take a path several times slower than a batch
            # of two (PyTorch 2.x): a lone tile is run beside a copy of itself.
            run = chunk + chunk[:1] if len(chunk) == 1 and device.type == "cpu" else chunk
            x = torch.stack([source[(slice(None), *(slice(c - b.start, c - b.start + p)
                                                     for c, b, p in zip(corner, box, patch)))]
                             for corner in run]).to(device)
            try:
                with torch.autocast(device.type, dtype=amp or torch.float32,
                                    enabled=amp is not None):
                    logits = model(x)
            except torch.cuda.OutOfMemoryError:
                if batch_size == 1:
                    raise VoxSegError("the GPU ran out of memory for a single tile; predict on "
                                      "the CPU (device cpu) or free GPU memory") from None
                torch.cuda.empty_cache()
                batch_size = max(1, batch_size // 2)
                continue
            if scores is None or weights is None:  # both or neither
                scores, weights = _accumulators(logits.shape[1], region_shape, acc_dtype,
                                                device)
                if scores.device != window.device:
                    window = window.to(scores.device)
            probs = _activate(logits[: len(chunk)].float(), task).to(scores.device)
            for corner, tile in zip(chunk, probs):
                # The part of this tile inside the region, in tile and in region coordinates.
                t_sl, r_sl = [], []
                for c, r, p in zip(corner, region, patch):
                    lo, hi = max(c, r.start), min(c + p, r.stop)
                    t_sl.append(slice(lo - c, hi - c))
                    r_sl.append(slice(lo - r.start, hi - r.start))
                w = window[tuple(t_sl)]
                scores[(slice(None), *r_sl)] += (tile[(slice(None), *t_sl)] * w).to(scores.dtype)
                weights[tuple(r_sl)] += w.to(weights.dtype)
            first += len(chunk)
            yield PredictEvent(done=first, total=len(corners))
    return scores, weights


def _finish(scores, weights, task, target_scale, probabilities, uncertainty) -> PredictResult:
    if task == "regression":
        scale = target_scale or {"mean": 0.0, "std": 1.0}
        values = scores[0] / weights * scale["std"] + scale["mean"]
        return PredictResult(labels=None, values=values.cpu().numpy().astype(np.float32),
                             task=task)
    if task == "multilabel":
        # Weights are positive, so blended probability >= 0.5 <=> scores >= weights / 2.
        labels = (1 + (scores >= 0.5 * weights)).to(torch.uint8).cpu().numpy()
    else:
        labels = (_argmax0(scores) + 1).cpu().numpy()
    probs = scores / weights if probabilities or uncertainty else None
    entropy = None
    if uncertainty:
        assert probs is not None  # computed for it
        eps = 1e-7
        p = probs.clamp(eps, 1 - eps)
        if task == "multilabel":
            h = -(p * p.log() + (1 - p) * (1 - p).log()).mean(dim=0) / math.log(2)
        else:
            h = -(p * p.log()).sum(dim=0) / math.log(max(2, p.shape[0]))
        entropy = h.clamp(0, 1).cpu().numpy().astype(np.float32)
    probs_out = (probs.cpu().numpy().astype(np.float32) if probabilities and probs is not None
                 else None)
    return PredictResult(labels=labels, probabilities=probs_out, task=task,
                         uncertainty=entropy)


def volume_bounds(source, low: float, high: float, *, max_voxels: int = 2**24
                  ) -> tuple[np.ndarray, float]:
    """How to normalize a ``(C, Z, Y, X)`` array that need not fit in memory (zarr, dask,
    numpy): per-channel ``(low, high)`` percentiles, shape (C, 2), and the normalized minimum
    (what pads a volume smaller than a tile). From the whole volume when it has at most
    ``max_voxels`` voxels (then exactly as :func:`~.data.normalize`), else from an evenly
    strided sample."""
    shape = source.shape[1:]
    stride = max(1, math.ceil((math.prod(shape) / max_voxels) ** (1 / 3)))
    sample = np.asarray(source[(slice(None), *(slice(None, None, stride),) * 3)],
                        dtype=np.float32)
    if not np.isfinite(sample).all():
        raise VoxSegError("the image has NaN or infinite values; replace them (e.g. with 0) "
                          "before predicting")
    bounds = percentiles(sample, low, high)
    return bounds, float(normalize_with(sample, bounds).min())


def _argmax0(scores: torch.Tensor) -> torch.Tensor:
    """``scores.argmax(0)`` as uint8, the first maximum winning as argmax does: one pass per
    class (argmax over the first axis of a large tensor is ten times slower on a CPU)."""
    best = scores[0].clone()
    index = torch.zeros(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    for k in range(1, scores.shape[0]):
        better = scores[k] > best
        index[better] = k
        torch.maximum(best, scores[k], out=best)
    return index


def _activate(outputs: torch.Tensor, task: str) -> torch.Tensor:
    if task == "multilabel":
        return torch.sigmoid(outputs)
    if task == "regression":
        return outputs
    return torch.softmax(outputs, dim=1)


def predict(model: torch.nn.Module, image, **kwargs) -> np.ndarray | None:
    """Labels 1..K for a ``(Z, Y, X)`` or ``(C, Z, Y, X)`` image (see :func:`iter_predict`);
    per-class labels (K, Z, Y, X) for a multi-label model; float values for regression. None
    when stopped by a ``should_stop`` among ``kwargs``."""
    return run_to_end(iter_predict(model, image, **kwargs)).output
