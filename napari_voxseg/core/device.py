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


PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU does bfloat16 matrix work natively (Intel AMX or AVX512-BF16), where
    oneDNN runs bfloat16 convolutions several times faster than float32."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # a private probe: never let it break prediction
            return False
    return False


def inference_dtype(device: torch.device, precision: str = "auto",
                    task: str = "multiclass") -> torch.dtype | None:
    """The autocast dtype for ``device`` (None: plain float32). ``auto``: float16 on CUDA,
    bfloat16 on a CPU that does it natively, else float32; a regression task stays float32
    on a CPU (bfloat16 has three significant digits: too few for regression values)."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise VoxSegError(f"unknown precision {precision!r}; choose one of "
                          f"{', '.join(PRECISIONS)}")
    if precision == "float32" or device.type == "mps":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        if device.type != "cpu" or task == "regression":
            return None
        return torch.bfloat16 if cpu_has_fast_bfloat16() else None
    if device.type == "cpu" and precision == "float16":
        raise VoxSegError("float16 is for GPUs; on a CPU use precision bfloat16 or float32")
    return torch.bfloat16 if precision == "bfloat16" else torch.float16
