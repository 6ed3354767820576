"""Choosing the device: auto (CUDA, then MPS, then CPU) or forced."""

from __future__ import annotations

import torch

from .errors import VoxSegError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """A torch device from ``auto``/``cpu``/``cuda``/``cuda:N``/``mps``; clear error if absent."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise VoxSegError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise VoxSegError("device 'cuda' was asked for but this PyTorch sees no CUDA GPU; use "
                          "device 'auto' or 'cpu', or install a CUDA build of PyTorch")
    if kind == "mps" and not _mps_available():
        raise VoxSegError("device 'mps' was asked for but Apple's MPS is not available here; "
                          "use device 'auto' or 'cpu'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise VoxSegError(f"cannot use device {name!r}; give e.g. 'cuda' or 'cuda:0'") from None
