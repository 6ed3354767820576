"""The CUDA path: stage 1 and the U-Net trained on the GPU (float16 autocast), prediction in
memory, block-wise and from the command line, and what happens when the GPU runs out of
memory. Each result is compared with the CPU's. Skipped where PyTorch sees no CUDA
GPU (as in CI); on a machine with one: ``pytest tests/core/test_cuda.py``."""

import json

import numpy as np
import pytest
import torch
from helpers import TINY, drain, run_cli

from napari_voxseg.core import load_model, read_volume, save_model
from napari_voxseg.core.blocks import open_zarr, predict_blocks
from napari_voxseg.core.device import inference_dtype, resolve_device
from napari_voxseg.core.features import feature_bank
from napari_voxseg.core.infer import iter_predict, run_to_end
from napari_voxseg.core.metrics import dice_per_class
from napari_voxseg.core.stage1 import fit_stage1
from napari_voxseg.core.train import TrainConfig, iter_train, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TWO = dict(TINY, iterations=20, two_stage=True)


@pytest.fixture(scope="module")
def gpu_run(small_volume):
    """A two-stage run on the GPU at the default precision: (events, result)."""
    image, _, strokes = small_volume
    return drain(iter_train(image, strokes.copy(), TrainConfig(**TWO, device="cuda")))


def test_auto_is_the_gpu_in_float16():
    assert resolve_device("auto").type == "cuda"
    assert inference_dtype(torch.device("cuda")) == torch.float16
    assert inference_dtype(torch.device("cuda"), "float32") is None


def test_filter_bank_on_the_gpu_equals_the_cpu(small_volume):
    image = small_volume[0]
    cpu = feature_bank(image, (2.0, 1.0, 1.0))
    gpu = feature_bank(image, (2.0, 1.0, 1.0), device="cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-4, rtol=1e-4)


def test_stage1_fits_and_predicts_on_the_gpu(small_volume):
    image, truth, strokes = small_volume
    on_cpu = fit_stage1(image, strokes, (2.0, 1.0, 1.0))
    # The forest is scikit-learn's either way; its arrays traversed on the GPU give the same.
    np.testing.assert_allclose(on_cpu.predict_proba(image, device="cuda"),
                               on_cpu.predict_proba(image), atol=1e-5)
    on_gpu = fit_stage1(image, strokes, (2.0, 1.0, 1.0), device="cuda")
    assert all(v.device.type == "cpu" for v in on_gpu.mlp.values())  # saved as it is
    labels = on_gpu.predict_proba(image, device="cuda").argmax(0) + 1
    assert min(dice_per_class(labels, truth).values()) > 0.9


def test_two_stage_training_on_the_gpu(small_volume, gpu_run, tmp_path):
    image, truth, strokes = small_volume
    events, result = gpu_run
    config = result.model.config
    assert config["training"]["device"].startswith("cuda")
    assert result.steps == TWO["iterations"] and not result.warning
    assert all(np.isfinite(loss) for _, loss in result.history)
    assert next(result.model.parameters()).device.type == "cuda"
    # Prediction on the GPU (float16) and on the CPU (float32) agree.
    gpu = run_to_end(iter_predict(result.model, image, probabilities=True))
    cpu_model = load_model(save_model(result.model, tmp_path / "model"))
    assert next(cpu_model.parameters()).device.type == "cpu"
    cpu = run_to_end(iter_predict(cpu_model, image, probabilities=True, device="cpu",
                                  precision="float32"))
    assert np.mean(gpu.labels == cpu.labels) > 0.995
    assert np.abs(gpu.probabilities - cpu.probabilities).max() < 0.05
    assert min(dice_per_class(cpu.labels, truth).values()) > 0.9


def test_the_same_run_in_float32_on_the_gpu(small_volume):
    image, truth, strokes = small_volume
    result = train(image, strokes, TrainConfig(**TWO, device="cuda", precision="float32"))
    labels = run_to_end(iter_predict(result.model, image, precision="float32")).labels
    assert min(dice_per_class(labels, truth).values()) > 0.9


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_other_tasks_train_and_predict_on_the_gpu(small_volume, task):
    image, truth, strokes = small_volume
    if task == "multilabel":  # one layer: 1 = absent, 2 = present
        labels, cfg = strokes[None], TrainConfig(**TWO, task=task, device="cuda")
    else:
        labels = (truth == 2).astype(np.float32) * 3.0
        cfg = TrainConfig(**TINY, task=task, device="cuda")
    result = train(image, labels, cfg)
    assert all(np.isfinite(loss) for _, loss in result.history)
    out = run_to_end(iter_predict(result.model, image, probabilities=task == "multilabel"))
    if task == "multilabel":
        assert out.probabilities.shape == (1, *image.shape)
    else:
        assert out.values.shape == image.shape and np.isfinite(out.values).all()


def test_block_wise_prediction_on_the_gpu_equals_in_memory(small_volume, gpu_run, tmp_path):
    image = small_volume[0]
    model = gpu_run[1].model
    whole = run_to_end(iter_predict(model, image)).labels
    predict_blocks(model, image[None], tmp_path / "labels.zarr", block_shape=(6, 20, 12),
                   device="cuda")
    np.testing.assert_array_equal(open_zarr(tmp_path / "labels.zarr")[:], whole)


def test_running_out_of_gpu_memory_halves_the_batch(small_volume):
    """A real out-of-memory: the allocator capped at a few hundred MB, a batch that needs
    more. Training goes on with a smaller batch and says so; prediction halves its batch."""
    image, _, strokes = small_volume
    big = np.tile(image, (4, 4, 4))
    marks = np.tile(strokes, (4, 4, 4))
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, 600e6 / total))
    try:
        cfg = TrainConfig(iterations=2, patch_size=(64, 128, 128), batch_size=16,
                          base_channels=16, depth=3, device="cuda", two_stage=False)
        result = train(big, marks, cfg)
        assert result.steps == 2 and any("ran out of memory" in a for a in result.adjustments)
        out = run_to_end(iter_predict(result.model, big, batch_size=64))
        assert out.labels.shape == big.shape
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def test_command_line_on_the_gpu(files, tmp_path):
    proc = run_cli("train", files / "image.tif", files / "strokes.tif", "--out",
                   tmp_path / "model", "--iterations", "10", "--patch-size", "16,32,32",
                   "--device", "cuda")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["training"]["device"].startswith("cuda")
    proc = run_cli("predict", tmp_path / "model", files / "image.tif", "--out",
                   tmp_path / "labels.tif", "--device", "cuda")
    assert proc.returncode == 0, proc.stderr
    labels, _ = read_volume(tmp_path / "labels.tif")
    assert labels.shape == (16, 32, 32) and set(np.unique(labels)) <= {1, 2}

