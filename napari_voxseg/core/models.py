"""The 3D U-Net, built from a small JSON-able config.

Config keys (all have defaults, see :data:`DEFAULT_ARCHITECTURE`): ``name`` (a key of
:data:`MODELS`), ``in_channels``, ``num_classes`` (output channels: one per class, or 1 for
regression), ``base_channels`` (features at full resolution, doubled at each level), ``depth``
(number of resolution levels) and ``norm`` (``instance``, ``batch`` or ``group``).
"""

from __future__ import annotations

from collections.abc import Mapping

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
}

_NORMS = {
    "instance": lambda c: nn.InstanceNorm3d(c, affine=True),
    "batch": nn.BatchNorm3d,
    "group": lambda c: nn.GroupNorm(min(8, c), c),
}


class ConvBlock(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by a norm and a LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        layers = []
        for c_in in (in_channels, out_channels):
            layers += [
                nn.Conv3d(c_in, out_channels, 3, padding=1, bias=False),
                _NORMS[norm](out_channels),
                nn.LeakyReLU(0.01, inplace=True),
            ]
        super().__init__(*layers)


class UNet3D(nn.Module):
    """A 3D U-Net: strided-conv downsampling, transposed-conv upsampling, skip connections.

    ``forward`` takes ``(N, C, Z, Y, X)`` with each spatial size divisible by ``2 ** (depth - 1)``
    and returns logits ``(N, num_classes, Z, Y, X)``.
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 16,
                 depth: int = 3, norm: str = "instance"):
        super().__init__()
        widths = [base_channels * 2**level for level in range(depth)]
        self.stem = ConvBlock(in_channels, widths[0], norm)
        self.down = nn.ModuleList()
        self.encoders = nn.ModuleList()
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            self.down.append(nn.Conv3d(c_in, c_in, 2, stride=2))
            self.encoders.append(ConvBlock(c_in, c_out, norm))
        self.up = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for c_in, c_out in zip(widths[:0:-1], widths[-2::-1]):
            self.up.append(nn.ConvTranspose3d(c_in, c_out, 2, stride=2))
            self.decoders.append(ConvBlock(2 * c_out, c_out, norm))
        self.head = nn.Conv3d(widths[0], num_classes, 1)
        self.divisor = 2 ** (depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down, encode in zip(self.down, self.encoders):
            skips.append(encode(down(skips[-1])))
        x = skips.pop()
        for up, decode in zip(self.up, self.decoders):
            x = decode(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


MODELS = {"unet3d": UNet3D}


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
    return arch


def build_model(architecture: Mapping) -> nn.Module:
    """Build the network an architecture config describes (see :func:`architecture_from`)."""
    arch = architecture_from(architecture)
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    return MODELS[arch["name"]](**kwargs)
