"""Export a saved model for other frameworks: TorchScript and ONNX files that take a normalized
``(N, C, Z, Y, X)`` float32 patch and return logits, each with a JSON file beside it that says
how to reproduce voxseg's prediction (normalization, channels, classes, activation, tiling).
The bioimage.io package is :mod:`.bioimageio`.

    paths = export_model(load_model("my-model"), "exported/model.onnx", "onnx")
    # exported/model.onnx, exported/model.onnx.json

A two-stage model's network takes the image and then stage 1's class probabilities; the
exported network is that network alone, and the JSON says so channel by channel (stage 1, a
filter bank and a forest, is not in the file). Each file is written whole or not at all
(a temporary file renamed into place), and never over an input or an existing file unless
``overwrite``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from .card import image_channels
from .errors import VoxSegError
from .export_net import (
    ONNX_OPSET,
    network_of,
    onnx_modules,
    save_torchscript,
    to_onnx,
    to_torchscript,
)
from .folders import replacing_file
from .infer import DEFAULT_OVERLAP
from .models import divisors, model_config
from .outputs import EXPORT, check_outputs
from .tasks import task_info

FORMATS = ("torchscript", "onnx", "bioimageio")
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx", "bioimageio": ".zip"}
EXPORT_FORMAT = "napari-voxseg-export"
EXPORT_VERSION = 1
def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise VoxSegError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def export_paths(out, fmt: str) -> tuple[Path, Path | None]:
    """The file an export writes and its JSON (None for bioimage.io, whose package holds it).
    ``out`` must end in the format's suffix."""
    out, suffix = Path(out), SUFFIXES[check_format(fmt)]
    if out.suffix.lower() != suffix:
        raise VoxSegError(f"{out.name}: a {fmt} export is a '{suffix}' file; name the output "
                          f"like {out.stem or 'model'}{suffix}")
    return out, (None if fmt == "bioimageio" else out.with_name(out.name + ".json"))


def check_export(out, fmt: str, *, inputs: Iterable = (), overwrite: bool = False
                 ) -> tuple[Path, Path | None]:
    """Check, before any work, that an export may write ``out`` (and its JSON)."""
    path, sidecar = export_paths(out, fmt)
    kinds = [(path, EXPORT), (sidecar, EXPORT)]
    check_outputs(kinds, inputs=inputs, overwrite=overwrite)
    return path, sidecar


def check_exportable(model: torch.nn.Module, fmt: str) -> None:
    """:class:`VoxSegError` (one line) when ``model`` cannot be exported as ``fmt``, or the
    packages that format needs are missing."""
    check_format(fmt)
    if fmt == "bioimageio":
        from .bioimageio import check_exportable as check_package

        check_package(model)
    if fmt in ("onnx", "bioimageio"):
        onnx_modules()


def example_input(model: torch.nn.Module, batch: int = 1, seed: int = 0,
                  size: Sequence[int] | None = None) -> torch.Tensor:
    """A seeded ``(batch, C, Z, Y, X)`` input the network accepts: the image channels in [0, 1]
    (as normalized images mostly are) and, for a two-stage model, class probabilities that sum
    to one. ``size``: spatial size (default the training patch)."""
    config = model_config(model)
    arch = config["architecture"]
    size = tuple(size or config["patch_size"])
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand((batch, image_channels(config), *size), generator=generator)
    priors = arch["in_channels"] - image.shape[1]
    if not priors:
        return image
    logits = 3 * torch.randn((batch, priors, *size), generator=generator)
    if config.get("task") == "multilabel":
        return torch.cat([image, logits.sigmoid()], dim=1)
    return torch.cat([image, logits.softmax(dim=1)], dim=1)


def describe(model: torch.nn.Module, fmt: str, file: str, *, opset: int | None = None) -> dict:
    """The JSON written beside an export: everything another tool needs to turn a raw image
    into voxseg's prediction with the exported network."""
    from .. import __version__

    config = model_config(model)
    task = task_info(config.get("task", "multiclass"))
    channels = image_channels(config)
    classes = config["classes"]
    norm = config["normalization"]
    inputs = [{"index": c, "kind": "image", "channel": c} for c in range(channels)]
    stage1 = config.get("stage1")
    if stage1:
        inputs += [{"index": channels + k, "kind": "stage1_probability",
                    "class": classes[k].get("name"), "id": classes[k].get("id")}
                   for k in range(len(classes))]
    activation = {"softmax": "softmax over the channels", "sigmoid": "sigmoid per channel",
                  "none": "none"}[task.activation]
    output = {"name": "logits", "axes": "NCZYX", "dtype": "float32", "activation": activation}
    if task.name == "multiclass":
        output["labels"] = "classes[argmax over channels]['id'] (1..K; 0 is never predicted)"
    elif task.name == "multilabel":
        output["labels"] = "per channel: 2 (present) where sigmoid >= 0.5, else 1 (absent)"
    else:
        scale = config.get("target_scale") or {"mean": 0.0, "std": 1.0}
        output["values"] = f"logits * {scale['std']!r} + {scale['mean']!r}"
    description = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "framework": fmt,
        "file": file,
        "task": task.name,
        "classes": classes,
        "input": {
            "name": "input", "axes": "NCZYX", "dtype": "float32",
            "spatial_multiple_of": list(divisors(config["architecture"])),
            "channels": inputs,
        },
        "output": output,
        "normalization": {
            "method": "percentile", "low": norm["low"], "high": norm["high"],
            "formula": "per image channel: (x - percentile(x, low)) / (percentile(x, high) - "
                       "percentile(x, low)), the percentiles of the whole image (voxseg takes "
                       "them from at most 2,000,000 voxels, every n-th); a channel whose two "
                       "percentiles are equal is only shifted",
        },
        "tiling": {
            "patch_size": config["patch_size"],
            "overlap": DEFAULT_OVERLAP,
            "blending": "Gaussian-weighted mean of the activated outputs "
                        "(probabilities), sigma 1/8 of the patch",
            "small_volumes": "along an axis shorter than the patch, the tile is the volume's "
                             "size rounded up to spatial_multiple_of, the volume padded with "
                             "its normalized minimum",
        },
        "voxel_size": config.get("voxel_size"),
        "exported_by": f"napari-voxseg {__version__}",
        "torch": torch.__version__,
    }
    if opset is not None:
        description["opset"] = opset
    if stage1:
        description["stage1"] = {
            "included": False,
            "what": "voxseg's first stage (a filter bank and a random forest + MLP); its "
                    "class probabilities of the whole image are input channels "
                    f"{channels}..{channels + len(classes) - 1}. Compute them with "
                    "napari_voxseg (load_model(folder).stage1.predict_proba(image, "
                    "voxel_size=the image's voxel size))",
            "settings": stage1,
        }
    return description


def export_model(model: torch.nn.Module, out, fmt: str, *, overwrite: bool = False,
                 inputs: Iterable = (), image=None, author: str | None = None) -> list[Path]:
    """Export ``model`` (a loaded voxseg model) as ``fmt`` to ``out``; return the paths written.

    ``torchscript`` (``.pt``) and ``onnx`` (``.onnx``) write the network and a JSON beside it
    (:func:`describe`); ``bioimageio`` (``.zip``) writes a BioImage Model Zoo package
    (:mod:`.bioimageio`; ``image``: a volume to cut its test input from, ``author``: its
    author). :class:`VoxSegError` (one line) when the model cannot be exported in that format,
    before anything is written.
    """
    path, sidecar = check_export(out, fmt, inputs=inputs, overwrite=overwrite)
    check_exportable(model, fmt)
    if fmt == "bioimageio":
        from .bioimageio import export_bioimageio

        return [export_bioimageio(model, path, image=image, author=author)]
    config = model_config(model)
    net = network_of(model)
    example = example_input(model)
    opset = ONNX_OPSET if fmt == "onnx" else None
    text = json.dumps(describe(model, fmt, path.name, opset=opset), indent=2, allow_nan=False)
    assert sidecar is not None
    try:
        # The JSON is renamed into place just before the network, so a failure while the
        # network is written leaves the earlier pair as it was.
        with replacing_file(path) as net_file:
            if fmt == "torchscript":
                save_torchscript(to_torchscript(net, example), net_file)
            else:
                to_onnx(net, example, net_file, divisors(config["architecture"]))
            with replacing_file(sidecar) as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    except OSError as exc:
        raise VoxSegError(f"could not write {path}: {exc.strerror or exc}; choose a folder you "
                          "can write to") from None
    except RuntimeError as exc:  # the exporter met something it cannot write
        raise VoxSegError(f"the {fmt} exporter failed ({str(exc).splitlines()[0][:300]})"
                          ) from None
    return [path, sidecar]


def reference_output(model: torch.nn.Module, example: torch.Tensor) -> np.ndarray:
    """Our network's logits for ``example``, float32 on the CPU (what an export must give)."""
    with torch.no_grad():
        return network_of(model)(example).numpy()
