"""The U-Nets (3D, and 2D applied slice by slice), built from a small JSON-able config.

Config keys (all have defaults, see :data:`DEFAULT_ARCHITECTURE`): ``name`` (a key of
:data:`MODELS`), ``in_channels``, ``num_classes`` (output channels: one per class, or 1 for
regression), ``base_channels`` (features at full resolution, doubled at each level), ``depth``
(number of resolution levels), ``norm`` (``instance``, ``batch`` or ``group``), and for
anisotropic voxels ``strides`` (per level below the first, the (Z, Y, X) downsampling, 1 or 2)
and ``kernels`` (per level, the (Z, Y, X) convolution size, 1 or 3); None = 2 and 3 on every
axis. :func:`plan_pooling` chooses them from the voxel size as nnU-Net does.

``unet2d`` is the same network built of 2D layers and applied to each slice on its own (the
slices folded into the batch), trained on one-slice patches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from .errors import VoxSegError

DEFAULT_ARCHITECTURE = {
    "name": "unet3d",
    "in_channels": 1,
    "num_classes": 2,
    "base_channels": 16,
    "depth": 3,
    "norm": "instance",
    "strides": None,
    "kernels": None,
    # Two stages: the last ``prior_channels`` inputs are the first stage's class probabilities,
    # and the network learns a correction to their logarithm (its head starts at zero, so an
    # untrained network predicts exactly what the first stage does).
    "prior_channels": 0,
    # How a prior becomes logits: "log" for softmax classes (multi-class), "logit" (log p -
    # log(1 - p)) for sigmoid ones (multi-label); either way a zero head gives back the prior.
    "prior_link": "log",
}
# The smallest probability a prior passes on (log 1e-4 = -9.2).
PRIOR_FLOOR = 1e-4
# A Z voxel at least this many times longer than the finest axis is not convolved across
# (kernel 1) nor downsampled until the finer axes have been pooled to within this factor.
ANISOTROPY_FACTOR = 2.0

_NORMS = {
    "instance": lambda c, dims: (nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d)(
        c, affine=True),
    "batch": lambda c, dims: (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(c),
    "group": lambda c, dims: nn.GroupNorm(min(8, c), c),
}
_CONV: dict[int, tuple[Callable[..., nn.Conv3d | nn.Conv2d],
                       Callable[..., nn.ConvTranspose3d | nn.ConvTranspose2d]]] = {
    3: (nn.Conv3d, nn.ConvTranspose3d), 2: (nn.Conv2d, nn.ConvTranspose2d)}


class ConvBlock(nn.Sequential):
    """Two convolutions (3x3x3, or 3x3 in 2D, by default), each followed by a norm and a
    LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str,
                 kernel: tuple[int, ...] = (3, 3, 3)):
        layers = []
        dims = len(kernel)
        padding = tuple(k // 2 for k in kernel)
        for c_in in (in_channels, out_channels):
            layers += [
                _CONV[dims][0](c_in, out_channels, kernel, padding=padding, bias=False),
                _NORMS[norm](out_channels, dims),
                nn.LeakyReLU(0.01, inplace=True),
            ]
        super().__init__(*layers)


class UNet3D(nn.Module):
    """A 3D U-Net: strided-conv downsampling, transposed-conv upsampling, skip connections.

    ``forward`` takes ``(N, C, Z, Y, X)`` with each spatial size divisible by the matching
    entry of ``divisors(...)`` (``2 ** (depth - 1)`` on every axis by default) and returns
    logits ``(N, num_classes, Z, Y, X)``. ``strides`` / ``kernels``: see the module docstring.
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 16,
                 depth: int = 3, norm: str = "instance", strides=None, kernels=None,
                 prior_channels: int = 0, prior_link: str = "log"):
        super().__init__()
        strides, kernels = _resolved(depth, strides, kernels)
        conv, transposed = _CONV[len(kernels[0])]
        widths = [base_channels * 2**level for level in range(depth)]
        self.stem = ConvBlock(in_channels, widths[0], norm, kernels[0])
        self.down = nn.ModuleList()
        self.encoders = nn.ModuleList()
        for level, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            self.down.append(conv(c_in, c_in, strides[level], stride=strides[level]))
            self.encoders.append(ConvBlock(c_in, c_out, norm, kernels[level + 1]))
        self.up = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level, (c_in, c_out) in zip(range(depth - 2, -1, -1),
                                        zip(widths[:0:-1], widths[-2::-1])):
            self.up.append(transposed(c_in, c_out, strides[level], stride=strides[level]))
            self.decoders.append(ConvBlock(2 * c_out, c_out, norm, kernels[level]))
        self.head = conv(widths[0], num_classes, 1)
        self.prior_channels, self.prior_link = prior_channels, prior_link
        if prior_channels:
            assert self.head.bias is not None  # made with one (bias defaults to True)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.divisor = _stride_product(strides, len(kernels[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prior = x[:, x.shape[1] - self.prior_channels:] if self.prior_channels else None
        skips = [self.stem(x)]
        for down, encode in zip(self.down, self.encoders):
            skips.append(encode(down(skips[-1])))
        x = skips.pop()
        for up, decode in zip(self.up, self.decoders):
            x = decode(torch.cat([up(x), skips.pop()], dim=1))
        logits = self.head(x)
        if prior is not None:
            if self.prior_link == "logit":
                prior = prior.float().clamp(PRIOR_FLOOR, 1.0 - PRIOR_FLOOR)
                logits = logits + (prior.log() - torch.log1p(-prior))
            else:
                logits = logits + prior.float().clamp(PRIOR_FLOOR, 1.0).log()
        return logits


class UNet2D(UNet3D):
    """A 2D U-Net (2D convolutions) applied to each slice on its own: ``forward`` takes and
    returns ``(N, C, Z, Y, X)`` like the 3D one, the slices folded into the batch, so no
    convolution mixes slices. For stacks with fewer slices than a 3D patch."""

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 16,
                 depth: int = 3, norm: str = "instance", strides=None, kernels=None,
                 prior_channels: int = 0, prior_link: str = "log"):
        super().__init__(in_channels, num_classes, base_channels, depth, norm,
                         _strides_2d(depth), [[3, 3]] * depth, prior_channels, prior_link)
        self.divisor = (1, *self.divisor)  # slices are never pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, z, y, x_ = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(n * z, c, y, x_)
        out = super().forward(slices)
        return out.reshape(n, z, out.shape[1], y, x_).permute(0, 2, 1, 3, 4)


MODELS = {"unet3d": UNet3D, "unet2d": UNet2D}


def _resolved(depth: int, strides, kernels):
    """Strides (depth - 1 triples) and kernels (depth triples), defaults filled in."""
    strides = [[2, 2, 2]] * (depth - 1) if strides is None else strides
    kernels = [[3, 3, 3]] * depth if kernels is None else kernels
    return [tuple(int(v) for v in s) for s in strides], [tuple(int(v) for v in k)
                                                         for k in kernels]


def _strides_2d(depth: int):
    """The 2D network's strides, (Y, X) pairs."""
    return [[2, 2]] * (depth - 1)


def _stride_product(strides, axes: int) -> tuple[int, ...]:
    """How much the network downsamples each of its ``axes``: the product of its strides."""
    return tuple(math.prod(int(s[a]) for s in strides) for a in range(axes))


def plan_pooling(voxel_size: Sequence[float] | None, depth: int):
    """nnU-Net's rule for anisotropic voxels: ``(strides, kernels)`` for a U-Net of ``depth``
    levels, or ``(None, None)`` (2 and 3 everywhere) when the voxels are near isotropic.

    At each level, an axis whose voxels are at least :data:`ANISOTROPY_FACTOR` times longer
    than the finest is neither convolved across (kernel 1) nor downsampled; the others are,
    which doubles their voxel size, so the coarse axis joins once the others catch up. Voxels
    4x longer in Z give kernels (1,3,3), (1,3,3), (3,3,3) and strides (1,2,2), (1,2,2): the
    third level sees voxels of equal size on every axis."""
    if voxel_size is None:
        return None, None
    spacing = [float(v) for v in voxel_size]
    if len(spacing) != 3 or not all(math.isfinite(v) and v > 0 for v in spacing):
        return None, None
    strides, kernels = [], []
    for level in range(depth):
        finest = min(spacing)
        coarse = [v / finest >= ANISOTROPY_FACTOR * (1 - 1e-6) for v in spacing]
        kernels.append([1 if c else 3 for c in coarse])
        if level < depth - 1:
            stride = [1 if c else 2 for c in coarse]
            strides.append(stride)
            spacing = [v * s for v, s in zip(spacing, stride)]
    if all(s == [2, 2, 2] for s in strides) and all(k == [3, 3, 3] for k in kernels):
        return None, None
    return strides, kernels


def divisors(architecture: Mapping) -> tuple[int, int, int]:
    """What each spatial size of the network's input must be a multiple of (Z, Y, X)."""
    depth = int(architecture.get("depth", DEFAULT_ARCHITECTURE["depth"]))
    if architecture.get("name") == "unet2d":
        y, x = _stride_product(_strides_2d(depth), 2)
        return (1, y, x)
    strides, _ = _resolved(depth, architecture.get("strides"), None)
    z, y, x = _stride_product(strides, 3)
    return (z, y, x)


def _check_triples(arch: dict, key: str, count: int, allowed: set) -> None:
    value = arch[key]
    if value is None:
        return
    if not (isinstance(value, (list, tuple)) and len(value) == count and all(
            isinstance(t, (list, tuple)) and len(t) == 3 and all(
                isinstance(v, int) and not isinstance(v, bool) and v in allowed for v in t)
            for t in value)):
        raise VoxSegError(f"architecture {key} = {value!r}; it must be {count} triples "
                          f"(Z, Y, X) of {' or '.join(map(str, sorted(allowed)))}")
    arch[key] = [list(t) for t in value]


def architecture_from(config: Mapping | None = None, **overrides) -> dict:
    """Complete an architecture config with defaults and check it."""
    arch = {**DEFAULT_ARCHITECTURE, **(config or {}), **overrides}
    unknown = set(arch) - set(DEFAULT_ARCHITECTURE)
    if unknown:
        raise VoxSegError(f"unknown architecture key(s) {sorted(unknown)}; known: "
                          f"{sorted(DEFAULT_ARCHITECTURE)}")
    if arch["name"] not in MODELS:
        raise VoxSegError(f"unknown network {arch['name']!r}; choose one of {sorted(MODELS)}")
    if arch["norm"] not in _NORMS:
        raise VoxSegError(f"unknown norm {arch['norm']!r}; choose one of {sorted(_NORMS)}")
    for key, low, high in (("in_channels", 1, 64), ("num_classes", 1, 255),
                           ("base_channels", 1, 256), ("depth", 1, 6)):
        value = arch[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise VoxSegError(f"architecture {key} = {value!r}; it must be a whole number "
                              f"from {low} to {high}")
    prior = arch["prior_channels"]
    if not isinstance(prior, int) or isinstance(prior, bool) or not (
            prior == 0 or (prior == arch["num_classes"] and prior < arch["in_channels"])):
        raise VoxSegError(f"architecture prior_channels = {prior!r}; it must be 0 or the "
                          "class count (and fewer than the input channels)")
    if arch["prior_link"] not in ("log", "logit"):
        raise VoxSegError(f"architecture prior_link = {arch['prior_link']!r}; it must be 'log' "
                          "(softmax classes) or 'logit' (sigmoid classes)")
    _check_triples(arch, "strides", arch["depth"] - 1, {1, 2})
    _check_triples(arch, "kernels", arch["depth"], {1, 3})
    return arch


def build_model(architecture: Mapping) -> nn.Module:
    """Build the network an architecture config describes (see :func:`architecture_from`)."""
    arch = architecture_from(architecture)
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    return MODELS[arch["name"]](**kwargs)


def model_config(model: nn.Module) -> dict[str, Any]:
    """``model.config``: the model card's dict (see :mod:`.card`) that a trained or loaded
    model carries. (Torch types a module's attributes as tensors or modules.)"""
    return cast(dict[str, Any], model.config)


def attach(model: nn.Module, **attributes: object) -> None:
    """Give ``model`` plain attributes: ``config`` (the card's dict) and, with two stages,
    ``stage1``. The same as ``model.config = ...``, which torch's typing allows only for
    tensors and modules."""
    for name, value in attributes.items():
        setattr(model, name, value)


def describe_network(config: Mapping) -> str:
    """A model config's network in a few words: '3D U-Net (anisotropic pooling), 2 channels,
    voxel 2x0.5x0.5'."""
    arch = config["architecture"]
    if arch.get("name") == "unet2d":
        text = "2D U-Net, slice by slice"
    else:
        text = "3D U-Net" + (" (anisotropic pooling)" if arch.get("strides") else "")
    channels = arch.get("in_channels", 1) - arch.get("prior_channels", 0)
    text += f", {channels} channel{'s' if channels != 1 else ''}"
    if arch.get("prior_channels"):
        text = "stage 1 + " + text
    voxel = config.get("voxel_size")
    if voxel:
        text += ", voxel " + "x".join(f"{float(v):g}" for v in voxel)
    return text
