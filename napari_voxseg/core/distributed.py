"""Training under ``torchrun``: the same loop in each process, the network wrapped in
DistributedDataParallel (gradients averaged across processes at each step), patches drawn
differently per process, one saved model written by rank 0.

    torchrun --standalone --nproc-per-node 2 -m napari_voxseg train image.tif strokes.tif --out m

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`start` joins the process
group they describe (NCCL on GPUs, gloo on CPUs), the training loop asks :func:`world` whether
it runs in one, and :func:`rank` tells the command line which process writes. Each process
fits stage 1 itself, on the same strokes with the same seed, so every process starts from the
same stage 1; the network's weights start equal (DDP broadcasts rank 0's) and stay equal.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .errors import VoxSegError


def requested() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: str = "auto") -> tuple[int, int, str]:
    """Join torchrun's process group (once); ``(rank, world size, backend)``. On CUDA each
    process takes the GPU of its ``LOCAL_RANK``."""
    if not requested():
        return 0, 1, ""
    if not dist.is_available():
        raise VoxSegError("this PyTorch build has no torch.distributed; run one process")
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend)
        except (RuntimeError, ValueError) as exc:
            raise VoxSegError(f"could not join the torchrun process group ({exc}); start "
                              "with torchrun --standalone --nproc-per-node N") from None
    return dist.get_rank(), dist.get_world_size(), backend


def world() -> tuple[int, int]:
    """``(rank, world size)`` of a joined process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank() -> int:
    return world()[0]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The network as the loop's forward pass sees it: DDP across the process group, else
    the network itself."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def mean(value: float) -> float:
    """``value`` averaged over the processes (each process's loss, so that every one takes
    the same decisions: skip a NaN step, keep the best weights)."""
    if world()[1] == 1:
        return value
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def finish(ok: bool = True) -> None:
    """Leave the process group: after a barrier when this process ended well; at once after
    an error (the other processes then fail in their next collective call, and torchrun
    ends them, rather than all waiting for each other)."""
    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()
