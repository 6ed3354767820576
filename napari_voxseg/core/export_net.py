"""A network to files other frameworks run: TorchScript (traced) and ONNX (torch's
``torch.export``-based exporter, dynamic batch and spatial axes). Shared by :mod:`.export` (the
files and their JSON) and :mod:`.bioimageio` (the package)."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Sequence

import torch

from .errors import VoxSegError
from .models import model_config

# The lowest opset the torch.export-based exporter writes. 18 to 21 give the same graph, the
# same outputs (to 1e-6) and the same onnxruntime speed (benchmarks/export_formats.py), and the
# lowest one runs in the most runtimes (older onnxruntime, ilastik, deepImageJ).
ONNX_OPSET = 18
# Spatial sizes the ONNX graph accepts go up to this (a multiple of the network's divisor).
MAX_SIZE = 1024


def onnx_modules() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise VoxSegError("exporting to ONNX needs the onnx and onnxscript packages: pip "
                          "install 'napari-voxseg[export]'") from None


def network_of(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 CPU copy of the network in eval mode, without voxseg's attached attributes."""
    config = model_config(model)
    net = copy.deepcopy(model).float().cpu().eval()
    for name in ("config", "stage1"):
        net.__dict__.pop(name, None)
    net.requires_grad_(False)
    if not config:
        raise VoxSegError("this model has no config; load it with voxseg first")
    return net


def _quiet():
    """Silence the exporters' deprecation and tracer warnings and their progress prints."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..."
    stack.callback(registration.setLevel, level)
    return stack


def to_torchscript(net: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """The network traced to TorchScript (shapes stay dynamic: the graph reads them)."""
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(net, example, check_trace=False)
    return traced


def save_torchscript(module: torch.jit.ScriptModule, path) -> None:
    with _quiet():  # torch deprecates TorchScript (for torch.export), but still writes it
        torch.jit.save(module, str(path))


def _dynamic_shapes(net: torch.nn.Module, divisor: Sequence[int]) -> dict:
    dim = torch.export.Dim
    axes = {0: dim("batch", min=1, max=256)}
    for axis, (name, d) in enumerate(zip("zyx", divisor), start=2):
        steps = dim(f"{name}_steps", min=1, max=MAX_SIZE // d)
        axes[axis] = d * steps if d > 1 else dim(name, min=1, max=MAX_SIZE)
    return {"x": axes}


def to_onnx(net: torch.nn.Module, example: torch.Tensor, path, divisor: Sequence[int],
            opset: int = ONNX_OPSET) -> None:
    """Write the network as ONNX with dynamic batch and spatial axes (each a multiple of the
    network's divisor), input ``input``, output ``logits``."""
    onnx_modules()
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(net, (example,), None, dynamo=True, opset_version=opset,
                                    input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=_dynamic_shapes(net, divisor),
                                    verbose=False)
    assert program is not None  # f=None: the exporter returns the program
    program.save(str(path))
