"""A BioImage Model Zoo (bioimage.io, format 0.5) package of a voxseg model: ``rdf.yaml``,
TorchScript and ONNX weights, a test input and its output, a sample, a cover image and a
README, zipped. ilastik, deepImageJ and ``bioimageio.core`` run it.

    export_bioimageio(load_model("my-model"), "my-model.bioimageio.zip", image=volume)

The package's input is the raw image, ``(batch, channel, z, y, x)``; its preprocessing is
voxseg's normalization (``scale_range``: each channel's low and high percentiles to 0 and 1,
per image); its output is the probabilities (softmax for classes, sigmoid for multi-label) or,
for regression, the values in the target's units. A two-stage model is refused: its network
also takes stage 1's probabilities, which no bioimage.io consumer can compute.

Needs ``bioimageio.spec`` (and ``onnx``, ``onnxscript``): ``pip install 'napari-voxseg[export]'``.
Nothing is downloaded: the description has no GitHub user names or URLs that would be checked.
"""

from __future__ import annotations

import getpass
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .card import image_channels
from .errors import VoxSegError
from .export_net import ONNX_OPSET, network_of, save_torchscript, to_onnx, to_torchscript
from .folders import replacing_file
from .models import divisors, model_config
from .tasks import task_info

# scale_range's (x - low) / (high - low + eps); voxseg divides by high - low alone, so the
# smallest eps keeps images with a tiny intensity range normalized as voxseg does.
EPS = 1e-12
# The 3D U-Net paper, which the network follows.
CITATION = ("Çiçek et al. 3D U-Net: learning dense volumetric segmentation from sparse "
            "annotation. MICCAI 2016", "10.1007/978-3-319-46723-8_49")
LICENSE = "CC-BY-4.0"


class Activated(torch.nn.Module):
    """The network with its activation: what a bioimage.io consumer shows."""

    def __init__(self, net: torch.nn.Module, task: str, scale: dict | None):
        super().__init__()
        self.net, self.task = net, task
        scale = scale or {"mean": 0.0, "std": 1.0}
        self.mean, self.std = float(scale["mean"]), float(scale["std"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.task == "multiclass":
            return out.softmax(dim=1)
        if self.task == "multilabel":
            return out.sigmoid()
        return out * self.std + self.mean


def check_exportable(model: torch.nn.Module) -> None:
    """:class:`VoxSegError` (one line) when the model cannot be a bioimage.io package."""
    if getattr(model, "stage1", None) is not None or model_config(model).get("stage1"):
        raise VoxSegError(
            "a two-stage model cannot be a bioimage.io package: its U-Net also takes stage 1's "
            "class probabilities (a filter bank and a random forest), which bioimage.io tools "
            "cannot compute; export it as torchscript or onnx (the JSON beside says how), or "
            "train a one-stage model (--one-stage) for bioimage.io")
    _modules()


def _modules():
    try:
        import imageio.v3 as iio
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise VoxSegError("a bioimage.io export needs bioimageio.spec: pip install "
                          "'napari-voxseg[export]'") from None
    return iio, save_bioimageio_package, v0_5


def normalize_like_bioimageio(raw: np.ndarray, low: float, high: float) -> np.ndarray:
    """``scale_range`` as bioimage.io tools apply it to a (B, C, Z, Y, X) array."""
    lo = np.percentile(raw, low, axis=(2, 3, 4), keepdims=True)
    hi = np.percentile(raw, high, axis=(2, 3, 4), keepdims=True)
    return ((raw - lo) / (hi - lo + EPS)).astype(np.float32)


def test_input(model: torch.nn.Module, image=None) -> np.ndarray:
    """A (1, C, Z, Y, X) float32 raw input: the middle of ``image`` ((Z, Y, X) or (C, Z, Y, X))
    cut to a multiple of the network's divisor (at most the training patch), else the middle of
    voxseg's sample (one channel) or seeded noise."""
    config = model_config(model)
    channels = image_channels(config)
    if image is None:
        if channels == 1:
            from .synthetic import make_sample

            image = make_sample().image
        else:
            image = np.random.default_rng(0).random((channels, 32, 64, 64), dtype=np.float32)
    image = np.asarray(image)
    image = image[None] if image.ndim == 3 else image
    if image.ndim != 4 or image.shape[0] != channels:
        raise VoxSegError(f"the sample image has shape {image.shape}; this model takes "
                          f"{channels} channel(s) of a 3D volume")
    cut = []
    for n, d, p in zip(image.shape[1:], divisors(config["architecture"]), config["patch_size"]):
        size = min(n, p) // d * d
        if size < d:
            raise VoxSegError(f"the sample image {image.shape[1:]} is smaller than the "
                              f"network's smallest input {divisors(config['architecture'])}")
        start = (n - size) // 2
        cut.append(slice(start, start + size))
    return np.ascontiguousarray(image[(slice(None), *cut)], dtype=np.float32)[None]


def _cover(raw: np.ndarray, output: np.ndarray, task: str) -> np.ndarray:
    """An RGB picture: the middle slice of the input beside the prediction's."""
    z = raw.shape[2] // 2
    grey = raw[0, 0, z].astype(np.float64)
    grey = (grey - grey.min()) / (np.ptp(grey) or 1.0)
    left = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)
    if task == "regression":
        right = left * 0 + ((output[0, 0, z] - output.min()) / (np.ptp(output) or 1.0)
                            * 255).astype(np.uint8)[..., None]
    else:
        palette = np.array([[40, 40, 40], [230, 80, 60], [60, 190, 90], [70, 120, 230],
                            [230, 200, 60], [180, 90, 200]], np.uint8)
        classes = output[0, :, z].argmax(0) if task == "multiclass" else \
            (output[0, :, z] >= 0.5).argmax(0) + (output[0, :, z] >= 0.5).any(0)
        right = palette[classes % len(palette)]
    picture = np.concatenate([left, right], axis=1)
    scale = max(1, 256 // picture.shape[0])
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)


def _readme(config: dict, names: list[str], task: str) -> str:
    norm = config["normalization"]
    return (f"# napari-voxseg {task} model\n\n"
            f"A U-Net ({config['architecture']['name']}) trained interactively with "
            "napari-voxseg on a user's strokes.\n\n"
            f"- Classes: {', '.join(names)}\n"
            f"- Input: the raw image (batch, channel, z, y, x); each channel is mapped so that "
            f"its {norm['low']}th and {norm['high']}th percentiles go to 0 and 1.\n"
            f"- Output: {'the values' if task == 'regression' else 'per-class probabilities'}"
            f"; the model was trained on patches of {tuple(config['patch_size'])} voxels"
            f" at voxel size {config.get('voxel_size')}.\n\n"
            "## Validation\n\n"
            "Trained on sparse strokes; its accuracy on other data is not known. Compare its "
            "prediction with a ground truth before you rely on it (napari-voxseg: "
            "`voxseg evaluate`, or the widget's Compare section).\n")


def export_bioimageio(model: torch.nn.Module, out, *, image=None,
                      author: str | None = None) -> Path:
    """Write the bioimage.io package of ``model`` to ``out`` (a ``.zip``), whole or not at all
    (check ``out`` first with :func:`.export.check_export`); ``image``: a volume to cut the
    test input and the cover from (see :func:`test_input`)."""
    check_exportable(model)
    iio, save_package, spec = _modules()
    out = Path(out)
    config = model_config(model)
    task = task_info(config.get("task", "multiclass")).name
    names = [c.get("name") or f"class {c.get('id', i + 1)}"
             for i, c in enumerate(config["classes"])]
    if task == "regression":
        names = ["value"]
    net = Activated(network_of(model), task, config.get("target_scale")).eval()
    raw = test_input(model, image)
    norm = config["normalization"]
    with torch.no_grad():
        expected = net(torch.from_numpy(normalize_like_bioimageio(
            raw, norm["low"], norm["high"]))).numpy()
    work = Path(tempfile.mkdtemp(prefix="voxseg-bioimageio-"))
    try:
        example = torch.from_numpy(normalize_like_bioimageio(raw, norm["low"], norm["high"]))
        save_torchscript(to_torchscript(net, example), work / "weights_torchscript.pt")
        to_onnx(net, example, work / "weights.onnx", divisors(config["architecture"]))
        np.save(work / "test_input.npy", raw)
        np.save(work / "test_output.npy", expected)
        iio.imwrite(work / "sample_input.tif", raw[0])
        iio.imwrite(work / "sample_output.tif", expected[0])
        iio.imwrite(work / "cover.png", _cover(raw, expected, task))
        (work / "README.md").write_text(_readme(config, names, task), encoding="utf-8")
        description = _describe(spec, work, config, names, task, raw.shape[1], author)
        with replacing_file(out) as tmp:
            save_package(description, output_path=Path(tmp))
    except VoxSegError:
        raise
    except Exception as exc:  # the spec's validation: never a traceback, nothing written
        raise VoxSegError(f"the bioimage.io package could not be made ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300]})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _identifiers(names: list[str]) -> list[str]:
    """Channel names as bioimage.io takes them: Python identifiers, no keywords, unique."""
    import keyword

    out: list[str] = []
    for name in names:
        ident = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "class"
        if not ident.isidentifier() or keyword.iskeyword(ident) or \
                keyword.issoftkeyword(ident):
            ident = f"c_{ident}"
        while ident in out:
            ident += "_"
        out.append(ident)
    return out


def _describe(spec, work: Path, config: dict, names: list[str], task: str, channels: int,
              author: str | None):
    """The bioimage.io model description (format 0.5) of the files in ``work``."""
    from .. import __version__

    norm = config["normalization"]
    axes = ("z", "y", "x")
    size = {a: spec.ParameterizedSize(min=d, step=d)
            for a, d in zip(axes, divisors(config["architecture"]))}
    raw_id, out_id = spec.TensorId("raw"), spec.TensorId("prediction")
    inputs = spec.InputTensorDescr(
        id=raw_id, description="the raw image; each channel normalized by its percentiles",
        axes=[spec.BatchAxis(),
              spec.ChannelAxis(channel_names=[spec.Identifier(f"channel{c}")
                                              for c in range(channels)]),
              *(spec.SpaceInputAxis(id=spec.AxisId(a), size=size[a]) for a in axes)],
        test_tensor=spec.FileDescr(source=work / "test_input.npy"),
        sample_tensor=spec.FileDescr(source=work / "sample_input.tif"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
            axes=[spec.AxisId(a) for a in axes], min_percentile=float(norm["low"]),
            max_percentile=float(norm["high"]), eps=EPS))])
    outputs = spec.OutputTensorDescr(
        id=out_id, description="values" if task == "regression" else
        f"{'softmax' if task == 'multiclass' else 'sigmoid'} probability of each class",
        axes=[spec.BatchAxis(),
              spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in _identifiers(names)]),
              *(spec.SpaceOutputAxis(id=spec.AxisId(a), size=spec.SizeReference(
                  tensor_id=raw_id, axis_id=spec.AxisId(a))) for a in axes)],
        test_tensor=spec.FileDescr(source=work / "test_output.npy"),
        sample_tensor=spec.FileDescr(source=work / "sample_output.tif"),
        data=spec.IntervalOrRatioDataDescr(type="float32"))
    weights = spec.WeightsDescr(
        torchscript=spec.TorchscriptWeightsDescr(
            source=work / "weights_torchscript.pt",
            pytorch_version=spec.Version(torch.__version__.split("+")[0])),
        onnx=spec.OnnxWeightsDescr(source=work / "weights.onnx", opset_version=ONNX_OPSET,
                                   parent="torchscript"))
    kind = {"multiclass": "semantic-segmentation", "multilabel": "semantic-segmentation",
            "regression": "regression"}[task]
    return spec.ModelDescr(
        name=f"napari-voxseg {task} U-Net ({len(names)} outputs)",
        description=f"A {task} U-Net trained from strokes with napari-voxseg {__version__}.",
        authors=[spec.Author(name=author or _user())],
        cite=[spec.CiteEntry(text=CITATION[0], doi=spec.Doi(CITATION[1]))],
        license=spec.LicenseId(LICENSE),
        documentation=spec.FileDescr(source=work / "README.md"),
        covers=[spec.FileDescr(source=work / "cover.png")],
        tags=["3d", "pytorch", "unet", kind, "napari-voxseg"],
        inputs=[inputs], outputs=[outputs], weights=weights, version="0.1.0")


def _user() -> str:
    try:
        return getpass.getuser() or "napari-voxseg user"
    except (KeyError, OSError):
        return "napari-voxseg user"
