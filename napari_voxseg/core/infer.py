"""Sliding-window prediction with Gaussian blending.

Tiles of the training patch size overlap by ``overlap``; each tile's softmax is weighted by a
Gaussian importance map (high in the middle, low at the edges) and the weighted sum is divided by
the summed weights, so neighbouring tiles fade into each other without seams.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .data import check_image, normalize
from .device import resolve_device
from .errors import VoxSegError
from .sampling import pad_to


def run_to_end(generator: Generator):
    """Exhaust a generator and return its return value."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


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
    or sigmoid (K, Z, Y, X) float32, when asked for. All None when cancelled.
    """

    labels: np.ndarray | None
    probabilities: np.ndarray | None = None
    cancelled: bool = False
    values: np.ndarray | None = None
    task: str = "multiclass"

    @property
    def output(self) -> np.ndarray | None:
        """The labels, or for regression the values."""
        return self.values if self.task == "regression" else self.labels


@functools.lru_cache(maxsize=8)
def gaussian_importance(patch_size: tuple[int, ...], sigma_scale: float = 1 / 8) -> np.ndarray:
    """Gaussian weights for a tile: 1 in the centre, sigma = size * sigma_scale, never 0."""
    grids = []
    for size in patch_size:
        d = np.arange(size) - (size - 1) / 2
        sigma = max(size * sigma_scale, 1e-3)
        grids.append(np.exp(-0.5 * (d / sigma) ** 2))
    window = functools.reduce(np.multiply.outer, grids).astype(np.float32)
    window /= window.max()
    window = np.maximum(window, window[window > 0].min(), out=window)
    window.setflags(write=False)
    return window


def tile_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of tiles of length ``patch`` covering ``[0, size)`` with the given overlap."""
    if size <= patch:
        return [0]
    step = max(1, int(round(patch * (1 - overlap))))
    count = math.ceil((size - patch) / step) + 1
    return sorted({int(round(s)) for s in np.linspace(0, size - patch, count)})


def context_crop(region: Sequence[slice], shape: Sequence[int], patch: Sequence[int]
                 ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The block to predict so that ``region`` gets context from around it.

    Each axis of the region is widened by a quarter tile on both sides, and to at least one
    tile, within the volume. Returns ``(crop, inner)``: the block, and where the region lies
    inside it.
    """
    crop, inner = [], []
    for r, size, p in zip(region, shape, patch):
        start, stop, _ = r.indices(size)
        if stop <= start:
            raise VoxSegError(f"the region {tuple(region)} is empty in a volume of shape "
                              f"{tuple(shape)}")
        length = min(size, max(stop - start + 2 * (p // 4), p))
        lo = min(max(0, (start + stop - length) // 2), size - length)
        crop.append(slice(lo, lo + length))
        inner.append(slice(start - lo, stop - lo))
    return tuple(crop), tuple(inner)


def iter_predict(
    model: torch.nn.Module,
    image,
    *,
    overlap: float = 0.5,
    batch_size: int = 2,
    device: str | torch.device | None = None,
    probabilities: bool = False,
    should_stop: Callable[[], bool] | None = None,
    tile_size: Sequence[int] | None = None,
    region: Sequence[slice] | None = None,
) -> Generator[PredictEvent, None, PredictResult]:
    """Predict a whole volume tile by tile; yield a :class:`PredictEvent` per batch of tiles.

    ``image`` is ``(Z, Y, X)`` or ``(C, Z, Y, X)``. Returns a :class:`PredictResult`; for the
    default multi-class task, labels 1..K (uint8) of the image's spatial shape. ``region``
    (three slices, Z, Y, X): predict only that block (with context around it) and return
    results of the block's shape.
    """
    config = model.config
    arch = config["architecture"]
    image = check_image(image, channels=arch["in_channels"])
    if not 0 <= overlap < 1:
        raise VoxSegError(f"overlap {overlap} must be at least 0 and below 1, e.g. 0.5")
    norm = config["normalization"]
    volume = normalize(image, norm["low"], norm["high"])
    result = yield from iter_blend(
        model, volume, task=config.get("task", "multiclass"), depth=arch["depth"],
        patch_size=tile_size or config["patch_size"], target_scale=config.get("target_scale"),
        region=region, overlap=overlap, batch_size=batch_size, device=device,
        probabilities=probabilities, should_stop=should_stop)
    return result


def iter_blend(
    model: torch.nn.Module,
    volume: np.ndarray,
    *,
    task: str,
    depth: int,
    patch_size: Sequence[int],
    target_scale: dict | None = None,
    region: Sequence[slice] | None = None,
    overlap: float = 0.5,
    batch_size: int = 2,
    device: str | torch.device | None = None,
    probabilities: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[PredictEvent, None, PredictResult]:
    """The sliding window over an already normalized ``(C, Z, Y, X)`` volume; see
    :func:`iter_predict`. Training calls it for its live previews with the model as it is."""
    if probabilities and task == "regression":
        raise VoxSegError("a regression model predicts values, not probabilities; leave out "
                          "the probabilities output")
    inner = None
    if region is not None:
        if len(tuple(region)) != 3:
            raise VoxSegError(f"region {region!r} must be three slices (Z, Y, X)")
        crop, inner = context_crop(region, volume.shape[1:], patch_size)
        volume = volume[(slice(None), *crop)]
    spatial = volume.shape[1:]
    divisor = 2 ** (depth - 1)
    # A volume smaller than a tile is padded; a tile larger than the volume is shrunk to fit.
    patch = tuple(max(divisor, min(int(p), -(-s // divisor) * divisor))
                  for p, s in zip(patch_size, spatial))
    padded = pad_to(volume, patch, value=float(volume.min()))
    shape = padded.shape[1:]
    corners = [(z, y, x) for z in tile_starts(shape[0], patch[0], overlap)
               for y in tile_starts(shape[1], patch[1], overlap)
               for x in tile_starts(shape[2], patch[2], overlap)]

    device = next(model.parameters()).device if device is None else resolve_device(device)
    model.to(device).eval()
    num_outputs = None
    weight = torch.tensor(gaussian_importance(patch), device=device)
    scores = None
    weights = torch.zeros(shape, dtype=torch.float32, device=device)
    source = torch.from_numpy(np.ascontiguousarray(padded))
    use_amp = device.type == "cuda"
    with torch.inference_mode():
        for first in range(0, len(corners), batch_size):
            if should_stop is not None and should_stop():
                return PredictResult(labels=None, cancelled=True, task=task)
            chunk = corners[first : first + batch_size]
            slices = [tuple(slice(c, c + p) for c, p in zip(corner, patch)) for corner in chunk]
            x = torch.stack([source[(slice(None), *s)] for s in slices]).to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
            if scores is None:
                num_outputs = logits.shape[1]
                scores = torch.zeros((num_outputs, *shape), dtype=torch.float32, device=device)
            probs = _activate(logits.float(), task) * weight
            for s, p in zip(slices, probs):
                scores[(slice(None), *s)] += p
                weights[s] += weight
            yield PredictEvent(done=min(first + batch_size, len(corners)), total=len(corners))
    crop = tuple(slice(0, s) for s in spatial) if inner is None else inner
    scores = scores[(slice(None), *crop)]
    weights = weights[crop]
    if task == "regression":
        scale = target_scale or {"mean": 0.0, "std": 1.0}
        values = scores[0] / weights * scale["std"] + scale["mean"]
        return PredictResult(labels=None, values=values.cpu().numpy().astype(np.float32),
                             task=task)
    if task == "multilabel":
        # Weights are positive, so blended probability >= 0.5 <=> scores >= weights / 2.
        labels = (1 + (scores >= 0.5 * weights)).to(torch.uint8).cpu().numpy()
    else:
        labels = (scores.argmax(dim=0) + 1).to(torch.uint8).cpu().numpy()
    probs_out = None
    if probabilities:
        probs_out = (scores / weights).cpu().numpy().astype(np.float32)
    return PredictResult(labels=labels, probabilities=probs_out, task=task)


def _activate(outputs: torch.Tensor, task: str) -> torch.Tensor:
    if task == "multilabel":
        return torch.sigmoid(outputs)
    if task == "regression":
        return outputs
    return torch.softmax(outputs, dim=1)


def predict(model: torch.nn.Module, image, **kwargs) -> np.ndarray:
    """Labels 1..K for a ``(Z, Y, X)`` or ``(C, Z, Y, X)`` image (see :func:`iter_predict`);
    per-class labels (K, Z, Y, X) for a multi-label model; float values for regression."""
    return run_to_end(iter_predict(model, image, **kwargs)).output
