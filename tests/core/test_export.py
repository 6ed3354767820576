"""Export for other frameworks: TorchScript and ONNX files give our network's logits (to 1e-4)
in torch.jit and onnxruntime on patches of other sizes; a bioimage.io package validates and
bioimageio.core reproduces its test output; a two-stage model's stage 1 inputs are described or
refused; the output rules hold."""

import json
import zipfile

import numpy as np
import pytest
import torch
from helpers import TINY, one_line_error, run_cli

from napari_voxseg.core.checkpoint import save_model
from napari_voxseg.core.export import example_input, export_model, reference_output
from napari_voxseg.core.infer import iter_predict, run_to_end
from napari_voxseg.core.train import TrainConfig, train

ort = pytest.importorskip("onnxruntime")
# what another program does with the file; torch deprecates TorchScript but still runs it
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")


def _train(volume, **settings):
    image, _, strokes = volume
    return train(image, strokes, TrainConfig(**{**TINY, **settings})).model


@pytest.fixture(scope="module")
def one_stage(small_volume):
    return _train(small_volume, two_stage=False)


@pytest.fixture(scope="module")
def two_stage(small_volume):
    return _train(small_volume, two_stage=True)


def _run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def _check_exports(model, folder, size):
    written = export_model(model, folder / "net.pt", "torchscript")
    written += export_model(model, folder / "net.onnx", "onnx")
    assert [p.name for p in written] == ["net.pt", "net.pt.json", "net.onnx", "net.onnx.json"]
    # another batch size and another spatial size than the export's example
    x = example_input(model, batch=2, size=size, seed=3)
    expected = reference_output(model, x)
    scripted = torch.jit.load(str(folder / "net.pt"))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(_run_onnx(folder / "net.onnx", x), expected, atol=1e-4)
    return json.loads((folder / "net.onnx.json").read_text())


def test_one_stage_exports_equal_our_network(one_stage, tmp_path):
    meta = _check_exports(one_stage, tmp_path, (12, 24, 40))
    assert meta["framework"] == "onnx" and meta["file"] == "net.onnx"
    assert meta["opset"] >= 18 and meta["task"] == "multiclass"
    assert meta["input"]["channels"] == [{"index": 0, "kind": "image", "channel": 0}]
    assert meta["input"]["spatial_multiple_of"] == [2, 2, 2]
    assert meta["normalization"]["low"] == one_stage.config["normalization"]["low"]
    assert [c["id"] for c in meta["classes"]] == [1, 2]
    assert "softmax" in meta["output"]["activation"] and "stage1" not in meta


def test_the_json_recipe_reproduces_our_prediction(one_stage, small_volume, tmp_path):
    """Following the JSON alone (normalize, run the ONNX file, activate, map to ids) gives
    voxseg's labels on a volume of one tile."""
    export_model(one_stage, tmp_path / "net.onnx", "onnx")
    meta = json.loads((tmp_path / "net.onnx.json").read_text())
    image = small_volume[0][4:12, 8:24, 4:20]  # (8, 16, 16): the patch, one tile
    norm = meta["normalization"]
    low, high = np.percentile(image, [norm["low"], norm["high"]])
    x = ((image - low) / (high - low)).astype(np.float32)[None, None]
    logits = _run_onnx(tmp_path / "net.onnx", torch.from_numpy(x))[0]
    ids = np.array([c["id"] for c in meta["classes"]])
    labels = ids[np.argmax(logits, axis=0)]
    ours = run_to_end(iter_predict(one_stage, image, precision="float32")).labels
    assert (labels == ours).mean() > 0.999


def test_slice_wise_network_exports_with_any_slice_count(small_volume, tmp_path):
    model = _train(small_volume, two_stage=False, network="2d", patch_size=(1, 16, 16))
    meta = _check_exports(model, tmp_path, (3, 16, 24))
    assert meta["input"]["spatial_multiple_of"][0] == 1


def test_two_stage_exports_the_unet_with_its_inputs_described(two_stage, tmp_path):
    meta = _check_exports(two_stage, tmp_path, (8, 16, 32))
    kinds = [c["kind"] for c in meta["input"]["channels"]]
    assert kinds == ["image", "stage1_probability", "stage1_probability"]
    assert meta["stage1"]["included"] is False
    assert meta["stage1"]["settings"]["num_classes"] == 2
    # nothing written for a format that cannot hold it
    one_line_error(lambda: export_model(two_stage, tmp_path / "p.zip", "bioimageio"),
                   "two-stage", "--one-stage")
    assert not (tmp_path / "p.zip").exists()


def test_bioimageio_package_validates_and_reproduces(one_stage, small_volume, tmp_path):
    spec = pytest.importorskip("bioimageio.spec")
    core = pytest.importorskip("bioimageio.core")
    out = tmp_path / "model.zip"
    assert export_model(one_stage, out, "bioimageio", image=small_volume[0],
                        author="Test Author") == [out]
    names = set(zipfile.ZipFile(out).namelist())
    assert {"rdf.yaml", "weights_torchscript.pt", "weights.onnx", "test_input.npy",
            "test_output.npy", "cover.png", "README.md"} <= names
    description = spec.load_description(out, perform_io_checks=True)
    assert description.validation_summary.status == "valid-format"
    summary = core.test_model(out, devices=["cpu"])
    assert summary.status == "passed", summary.format()
    # the package's output is our prediction's probabilities on its test input
    with zipfile.ZipFile(out) as z:
        z.extractall(tmp_path / "pkg")
    raw = np.load(tmp_path / "pkg" / "test_input.npy")
    probs = np.load(tmp_path / "pkg" / "test_output.npy")
    assert raw.shape[:2] == (1, 1) and probs.shape[:2] == (1, 2)
    ours = run_to_end(iter_predict(one_stage, raw[0], probabilities=True,
                                   precision="float32")).probabilities
    np.testing.assert_allclose(probs[0], ours, atol=1e-4)  # one tile: voxseg's prediction


def test_export_follows_the_output_rules(one_stage, tmp_path):
    model_dir = save_model(one_stage, tmp_path / "model")
    one_line_error(lambda: export_model(one_stage, tmp_path / "net.onnx", "jpeg"),
                   "unknown export format", "torchscript")
    one_line_error(lambda: export_model(one_stage, tmp_path / "net.zip", "onnx"),
                   "'.onnx'")
    one_line_error(lambda: export_model(one_stage, model_dir / "net.onnx", "onnx",
                                        inputs=[model_dir]), "never writes over")
    mine = tmp_path / "notes.pt.json"
    mine.write_text("a user's file")
    one_line_error(lambda: export_model(one_stage, tmp_path / "notes.pt", "torchscript"),
                   "exists", "--overwrite")
    assert mine.read_text() == "a user's file" and not (tmp_path / "notes.pt").exists()
    export_model(one_stage, tmp_path / "notes.pt", "torchscript", overwrite=True)
    assert json.loads(mine.read_text())["framework"] == "torchscript"


def test_a_failed_export_leaves_no_file(one_stage, tmp_path, monkeypatch):
    import napari_voxseg.core.export as export

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "to_onnx", broken)
    one_line_error(lambda: export_model(one_stage, tmp_path / "net.onnx", "onnx"),
                   "exporter failed", "disk full")
    assert list(tmp_path.iterdir()) == []


def test_cli_export(trained, tmp_path):
    proc = run_cli("export", trained, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.onnx.json").is_file()
    proc = run_cli("export", trained, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--overwrite" in proc.stderr
    proc = run_cli("export", trained, "--format", "bioimageio", "--out", tmp_path / "m.zip")
    assert proc.returncode == 2 and "two-stage" in proc.stderr and "Traceback" not in proc.stderr
