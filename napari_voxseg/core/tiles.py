"""The one tile grid over a volume that every prediction uses, its Gaussian weights, and
regions (blocks) of a volume."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from .errors import VoxSegError


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


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles lie: ``patch`` (the tile size, shrunk to fit a small volume) and the
    tile starts along each axis of the volume (padded at its end to at least one tile)."""

    shape: tuple[int, int, int]  # the volume's spatial shape
    patch: tuple[int, int, int]
    starts: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

    @classmethod
    def of(cls, shape: Sequence[int], patch_size: Sequence[int], divisor: Sequence[int],
           overlap: float):
        """``divisor``: what the network needs each tile size to be a multiple of (Z, Y, X),
        see :func:`~.models.divisors`."""
        if not 0 <= overlap < 1:
            raise VoxSegError(f"overlap {overlap} must be at least 0 and below 1, e.g. 0.5")
        patch = cast(tuple[int, int, int],
                     tuple(max(d, min(int(p), -(-int(s) // d) * d))
                           for p, s, d in zip(patch_size, shape, divisor)))
        starts = cast(tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
                      tuple(tuple(tile_starts(max(int(s), p), p, overlap))
                            for s, p in zip(shape, patch)))
        return cls(cast(tuple[int, int, int], tuple(int(s) for s in shape)), patch, starts)

    def tiles_meeting(self, region: Sequence[slice]) -> list[tuple[int, int, int]]:
        """The corners of the tiles that overlap ``region``, in raster order."""
        per_axis = [[s for s in starts if s < r.stop and s + p > r.start]
                    for starts, r, p in zip(self.starts, region, self.patch)]
        return [(z, y, x) for z in per_axis[0] for y in per_axis[1] for x in per_axis[2]]

    def count(self) -> int:
        return math.prod(len(s) for s in self.starts)


def concrete(region: Sequence[slice] | None, shape: Sequence[int]) -> tuple[slice, ...]:
    """``region`` with its bounds filled in and checked (None: the whole volume)."""
    if region is None:
        return tuple(slice(0, int(n)) for n in shape)
    region = tuple(region)
    if len(region) != 3 or not all(isinstance(r, slice) for r in region):
        raise VoxSegError(f"region {region!r} must be three slices (Z, Y, X)")
    out = []
    for r, n in zip(region, shape):
        start, stop, step = r.indices(int(n))
        if step != 1 or stop <= start:
            raise VoxSegError(f"the region {region} is empty or strided in a volume of shape "
                              f"{tuple(shape)}; give slices with start < stop and no step")
        out.append(slice(start, stop))
    return tuple(out)
