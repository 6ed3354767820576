"""A multi-scale 3D filter bank in torch (CPU or GPU), for an instant per-voxel classifier.

    feats = feature_bank(image, voxel_size=(2.0, 0.5, 0.5))          # (F, Z, Y, X)
    names = feature_names(image.shape[0])                             # F names
    block = feature_block(image, (0, 0, 0), (32, 64, 64), bounds=b)   # equals feats[:, :32, ...]

Per channel: the intensity itself, then at each scale the Gaussian-smoothed intensity, the
gradient magnitude of Gaussian, the Laplacian of Gaussian and the three eigenvalues of the
Hessian of Gaussian (ascending), and the differences of Gaussians of consecutive scales.

Scales are in units of the finest axis: ``sigma`` along an axis is ``scale / (voxel / min
voxel)``, so anisotropic voxels get fewer voxels of blur along their coarse axis. An axis whose
sigma falls below :data:`MIN_SIGMA` is not smoothed, and its derivatives are central
differences. Derivatives are taken per unit of the finest axis and scale-normalized (times
``scale ** order``) so that features of all scales have comparable magnitudes. Each filter is
a separable correlation with the 1D kernels of :func:`scipy.ndimage.gaussian_filter` (truncated
at 4 sigma) and its ``reflect`` boundary, so the results equal scipy's (tested).

The image is first mapped with the project's percentile normalization (:mod:`.data`), so a
classifier trained on the features of one volume applies to another volume of the same kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import cast

import numpy as np
import torch

from .data import DEFAULT_PERCENTILES, normalize_with
from .infer import volume_bounds

DEFAULT_SCALES = (0.7, 1.6, 3.5, 5.0)
# Below this sigma (in voxels) an axis is not smoothed: a Gaussian that narrow is a delta.
MIN_SIGMA = 0.3
TRUNCATE = 4.0
# The filters computed at each scale, in order; "hessian" gives three features.
PER_SCALE = ("gauss", "gradmag", "log", "hessian")
# Derivative orders (z, y, x) each feature needs.
_FIRST = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
_SECOND = ((2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1))
_EIGEN_CHUNK = 1 << 18
# Outputs per banded matrix product along an axis (cost per output grows with it).
_CHUNK = 256


def relative_spacing(voxel_size: Sequence[float] | None) -> tuple[float, float, float]:
    """The voxel size divided by its smallest entry ((1, 1, 1) when not given)."""
    if voxel_size is None:
        return (1.0, 1.0, 1.0)
    size = tuple(float(v) for v in voxel_size)
    if len(size) != 3 or min(size) <= 0 or not all(math.isfinite(v) for v in size):
        raise ValueError(f"voxel_size must be three positive numbers (Z, Y, X), got {voxel_size}")
    least = min(size)
    z, y, x = size
    return (z / least, y / least, x / least)


def axis_sigmas(scale: float, voxel_size: Sequence[float] | None = None) -> tuple[float, ...]:
    """Sigma in voxels along (Z, Y, X) for a scale in units of the finest axis."""
    return tuple(scale / s for s in relative_spacing(voxel_size))


def kernel_radius(sigma: float) -> int:
    """The kernel radius scipy uses (``truncate`` 4), 1 for an unsmoothed axis."""
    return int(TRUNCATE * sigma + 0.5) if sigma >= MIN_SIGMA else 1


def correlation_kernel(sigma: float, order: int) -> np.ndarray:
    """The 1D correlation weights (float64) of a Gaussian derivative, as scipy applies them.

    Equal to ``scipy.ndimage._filters._gaussian_kernel1d(sigma, order, radius)[::-1]``. Below
    :data:`MIN_SIGMA`: a delta (order 0) or a central difference (orders 1 and 2)."""
    if order not in (0, 1, 2):
        raise ValueError(f"derivative order must be 0, 1 or 2, got {order}")
    if sigma < MIN_SIGMA:
        return np.array([[0.0, 1.0, 0.0], [-0.5, 0.0, 0.5], [1.0, -2.0, 1.0]][order])
    radius = kernel_radius(sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 * x**2 / sigma**2)
    phi /= phi.sum()
    # The kernel of order n is phi times a polynomial; correlation flips it (x -> -x).
    polynomial = [np.ones_like(x), x / sigma**2, (x**2 - sigma**2) / sigma**4][order]
    return phi * polynomial


def halo(scales: Sequence[float] = DEFAULT_SCALES,
         voxel_size: Sequence[float] | None = None) -> tuple[int, int, int]:
    """Voxels of context each side (Z, Y, X) that the features of a block need."""
    return cast(tuple[int, int, int],
                tuple(max(kernel_radius(s) for s in sigmas)
                      for sigmas in zip(*(axis_sigmas(scale, voxel_size) for scale in scales))))


def feature_names(channels: int = 1, scales: Sequence[float] = DEFAULT_SCALES) -> list[str]:
    """Names of the features :func:`feature_bank` computes, in its order."""
    names = []
    for c in range(channels):
        prefix = f"c{c}_" if channels > 1 else ""
        names.append(f"{prefix}intensity")
        for scale in scales:
            names += [f"{prefix}{kind}_{scale:g}" for kind in PER_SCALE[:3]]
            names += [f"{prefix}hessian{i}_{scale:g}" for i in range(3)]
        names += [f"{prefix}dog_{a:g}_{b:g}" for a, b in zip(scales[:-1], scales[1:])]
    return names


def _banded(weights: torch.Tensor, n: int) -> torch.Tensor:
    """The (n, n + k - 1) matrix of a valid correlation with ``weights`` (k taps)."""
    k = weights.numel()
    rows = torch.arange(n, device=weights.device)[:, None]
    band = torch.zeros((n, n + k - 1), dtype=weights.dtype, device=weights.device)
    band[rows, rows + torch.arange(k, device=weights.device)] = weights
    return band


def _correlate(x: torch.Tensor, weights: torch.Tensor, axis: int, trim: int) -> torch.Tensor:
    """Valid correlation of ``x`` (N, Z, Y, X) along spatial ``axis`` (0..2), first trimming
    ``trim`` voxels each side of that axis (a halo the kernel does not need).

    A matrix product with a banded matrix, in chunks of :data:`_CHUNK` outputs: several
    times faster than ``conv3d`` with a 1D kernel on a CPU."""
    if trim:
        x = x.narrow(axis + 1, trim, x.shape[axis + 1] - 2 * trim)
    k = weights.numel()
    if k == 3 and weights[0] == 0 and weights[2] == 0 and weights[1] == 1:  # a delta
        return x.narrow(axis + 1, 1, x.shape[axis + 1] - 2)
    n = x.shape[axis + 1] - k + 1
    parts = []
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        band, part = _banded(weights, m), x.narrow(axis + 1, start, m + k - 1)
        if axis == 0:
            flat = part.reshape(part.shape[0], m + k - 1, -1)
            parts.append(torch.matmul(band, flat).view(part.shape[0], m, *part.shape[2:]))
        elif axis == 1:
            parts.append(torch.matmul(band, part))
        else:
            parts.append(torch.matmul(part, band.t()))
    return parts[0] if len(parts) == 1 else torch.cat(parts, axis + 1)


def _derivatives(padded: torch.Tensor, sigmas: Sequence[float], pad: Sequence[int],
                 orders: Sequence[tuple[int, int, int]], unit: Sequence[float] = (1.0, 1.0, 1.0)
                 ) -> dict[tuple, torch.Tensor]:
    """Gaussian derivatives of ``padded`` (N, Z+2pz, Y+2py, X+2px) of the given (z, y, x)
    orders on the unpadded extent, each times ``unit[axis] ** order`` (1: in voxel units).
    Shares the passes along Z and Y."""
    kernels = {}
    for axis, sigma in enumerate(sigmas):
        for order in range(3):
            w = correlation_kernel(sigma, order) * unit[axis] ** order
            kernels[axis, order] = (torch.as_tensor(w, dtype=padded.dtype, device=padded.device),
                                    pad[axis] - len(w) // 2)
    cache: dict[tuple, torch.Tensor] = {(): padded}

    def get(prefix: tuple) -> torch.Tensor:
        if prefix not in cache:
            axis = len(prefix) - 1
            weights, trim = kernels[axis, prefix[-1]]
            cache[prefix] = _correlate(get(prefix[:-1]), weights, axis, trim)
        return cache[prefix]

    return {order: get(order) for order in orders}


def hessian_eigenvalues(h: Sequence[torch.Tensor], wide: torch.dtype | None = None
                        ) -> torch.Tensor:
    """Ascending eigenvalues (3, ...) of the symmetric 3x3 matrices with entries
    ``h = (hzz, hyy, hxx, hzy, hzx, hyx)``: closed form (trigonometric), computed in chunks in
    ``wide`` precision. float32 (the default, several times faster on a CPU than float64) is
    typically within 1e-6 of the largest entry, but within only 2e-4 where two eigenvalues
    are nearly equal (the closed form's ``acos`` near 1); ample for features."""
    shape, device = h[0].shape, h[0].device
    wide = wide or torch.float32
    flat = [t.reshape(-1) for t in h]
    out = torch.empty((3, flat[0].numel()), dtype=h[0].dtype, device=device)
    for start in range(0, flat[0].numel(), _EIGEN_CHUNK):
        a, b, c, d, e, f = (t[start:start + _EIGEN_CHUNK].to(wide) for t in flat)
        q = (a + b + c) / 3
        off = d * d + e * e + f * f
        p = torch.sqrt(((a - q) ** 2 + (b - q) ** 2 + (c - q) ** 2 + 2 * off) / 6)
        safe = torch.where(p > 0, p, torch.ones_like(p))
        ba, bb, bc, bd, be, bf = (a - q) / safe, (b - q) / safe, (c - q) / safe, \
            d / safe, e / safe, f / safe
        det = ba * (bb * bc - bf * bf) - bd * (bd * bc - bf * be) + be * (bd * bf - bb * be)
        phi = torch.acos(torch.clamp(det / 2, -1.0, 1.0)) / 3
        high = q + 2 * p * torch.cos(phi)
        low = q + 2 * p * torch.cos(phi + 2 * math.pi / 3)
        mid = 3 * q - high - low
        out[:, start:start + _EIGEN_CHUNK] = torch.stack((low, mid, high)).to(out.dtype)
    return out.view(3, *shape)


def _reflect_index(start: int, stop: int, n: int) -> np.ndarray:
    """Indices of ``range(start, stop)`` folded into ``[0, n)`` as scipy's 'reflect' mode does
    (d c b a | a b c d | d c b a), for any distance outside."""
    i = np.mod(np.arange(start, stop), 2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


def _read_padded(image, start: Sequence[int], stop: Sequence[int], pad: Sequence[int]
                 ) -> np.ndarray:
    """``image[:, start-pad : stop+pad]`` (C, Z, Y, X), reflected at the volume's borders as
    if the whole volume were padded. Reads only the needed contiguous slab of ``image``."""
    index = [_reflect_index(a - p, b + p, n)
             for a, b, p, n in zip(start, stop, pad, image.shape[1:])]
    slab = np.asarray(image[(slice(None), *(slice(int(i.min()), int(i.max()) + 1)
                                            for i in index))])
    return slab[np.ix_(range(slab.shape[0]), *(i - i.min() for i in index))]


def _check_region(shape: Sequence[int], start, stop) -> tuple[tuple[int, ...], tuple[int, ...]]:
    start = tuple(int(s) for s in start)
    stop = tuple(int(s) for s in stop)
    if len(start) != 3 or len(stop) != 3 or any(
            not 0 <= a < b <= n for a, b, n in zip(start, stop, shape)):
        raise ValueError(f"region {start}..{stop} is not a non-empty part of {tuple(shape)}")
    return start, stop


def feature_block(image, start: Sequence[int], stop: Sequence[int], *,
                  voxel_size: Sequence[float] | None = None,
                  scales: Sequence[float] = DEFAULT_SCALES, bounds: np.ndarray | None = None,
                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
                  ) -> torch.Tensor:
    """Features (F, z, y, x) of the region ``[start, stop)`` of a ``(C, Z, Y, X)`` image (numpy,
    memmap, zarr or torch; read with a halo around the region), equal to that region of
    :func:`feature_bank` of the whole image given the same ``bounds``.

    ``bounds``: per-channel (low, high) intensities that map to 0 and 1 (shape (C, 2), e.g.
    from :func:`~.infer.volume_bounds`); ``None`` leaves the intensities as they are.
    ``dtype``: of the result (float16 halves its memory); filtering runs in float32."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if len(image.shape) != 4:
        raise ValueError(f"image must be (C, Z, Y, X), got shape {tuple(image.shape)}")
    start, stop = _check_region(image.shape[1:], start, stop)
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {scales}")
    device = torch.device(device)
    pad = halo(scales, voxel_size)
    spacing = relative_spacing(voxel_size)
    block = _read_padded(image, start, stop, pad).astype(np.float32, copy=False)
    if bounds is not None:
        block = normalize_with(block, np.asarray(bounds, dtype=np.float64))
    padded = torch.as_tensor(np.ascontiguousarray(block), device=device)
    channels, shape = padded.shape[0], tuple(b - a for a, b in zip(start, stop))
    per_channel = 1 + 6 * len(scales) + len(scales) - 1
    out = torch.empty((channels * per_channel, *shape), dtype=dtype, device=device)
    inner = tuple(slice(p, p + n) for p, n in zip(pad, shape))
    out[0::per_channel] = padded[(slice(None), *inner)].to(dtype)
    previous: torch.Tensor | None = None
    for i, scale in enumerate(scales):
        # Per unit of the finest axis, scale-normalized: times (scale / spacing) ** order.
        d = _derivatives(padded, axis_sigmas(scale, voxel_size), pad,
                         ((0, 0, 0), *_FIRST, *_SECOND), [scale / s for s in spacing])
        grad = torch.sqrt(cast(torch.Tensor, sum(d[o] ** 2 for o in _FIRST)))  # not 0: 3 terms
        log = d[2, 0, 0] + d[0, 2, 0] + d[0, 0, 2]
        eig = torch.stack([hessian_eigenvalues([d[o][c] for o in _SECOND])
                           for c in range(channels)], 1)
        base = 1 + 6 * i
        for j, value in enumerate((d[0, 0, 0], grad, log, *eig)):
            out[base + j::per_channel] = value.to(dtype)
        if previous is not None:  # from the second scale on
            out[6 * len(scales) + i::per_channel] = (previous - d[0, 0, 0]).to(dtype)
        previous = d[0, 0, 0]
    return out


def default_bounds(image) -> np.ndarray:
    """Per-channel (low, high) intensities that the filter bank maps to 0 and 1 by default:
    the project's percentiles of a strided sample of the ``(C, Z, Y, X)`` image."""
    return volume_bounds(image, *DEFAULT_PERCENTILES)[0]


def feature_bank(image, voxel_size: Sequence[float] | None = None, *,
                 scales: Sequence[float] = DEFAULT_SCALES, normalize: bool = True,
                 bounds: np.ndarray | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The filter bank (F, Z, Y, X) of a whole ``(C, Z, Y, X)`` (or ``(Z, Y, X)``) image.

    With ``normalize`` (the default) each channel is first mapped so its 1st and 99.8th
    percentiles go to 0 and 1, as the U-Net's input is (or with ``bounds`` when given, e.g. to
    match blocks of a larger volume). ``dtype=torch.float16`` stores the stack in half the
    memory. Names of the features: :func:`feature_names`."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[None]
    if normalize and bounds is None:
        bounds = default_bounds(image)
    return feature_block(image, (0, 0, 0), image.shape[1:], voxel_size=voxel_size,
                         scales=scales, bounds=bounds if normalize else None, device=device,
                         dtype=dtype)


def iter_feature_blocks(image, block: Sequence[int] = (64, 128, 128), *,
                        voxel_size: Sequence[float] | None = None,
                        scales: Sequence[float] = DEFAULT_SCALES,
                        bounds: np.ndarray | None = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32
                        ) -> Iterator[tuple[tuple[slice, slice, slice], torch.Tensor]]:
    """``(region, features)`` for the non-overlapping blocks covering a ``(C, Z, Y, X)`` image
    that need not fit in memory; ``bounds`` default to the percentiles of a strided sample of
    the volume (see :func:`~.infer.volume_bounds`). Peak memory: one block's features with
    its halo, whatever the volume's size."""
    if bounds is None:
        bounds = default_bounds(image)
    shape = image.shape[1:]
    for z in range(0, shape[0], block[0]):
        for y in range(0, shape[1], block[1]):
            for x in range(0, shape[2], block[2]):
                start = (z, y, x)
                stop = tuple(min(a + b, n) for a, b, n in zip(start, block, shape))
                region = cast(tuple[slice, slice, slice],
                              tuple(slice(a, b) for a, b in zip(start, stop)))
                yield region, feature_block(image, start, stop, voxel_size=voxel_size,
                                            scales=scales, bounds=bounds, device=device,
                                            dtype=dtype)
