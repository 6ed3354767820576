"""The training loop under torchrun: two CPU processes (gloo) train one model, written by
rank 0 alone."""

import json
import subprocess
import sys

import numpy as np
from helpers import tree

from napari_voxseg.core import load_model, predict, read_volume


def test_two_processes_write_one_model(files, tmp_path):
    before = tree(files)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "napari_voxseg", "train", files / "image.tif", files / "strokes.tif", "--out",
         tmp_path / "model", "--iterations", "6", "--patch-size", "16,32,32", "--threads", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "distributed: 2 processes (gloo)" in proc.stderr and "4 a step in all" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.count("saved model to") == 1  # rank 1 writes and says nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing from rank 1
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "config.json", "model.safetensors", "stage1.safetensors"]
    assert tree(files) == before
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["training"]["world_size"] == 2 and config["training"]["steps_done"] == 6
    image, _ = read_volume(files / "image.tif")
    labels = predict(load_model(tmp_path / "model"), image)
    assert labels.shape == image.shape and set(np.unique(labels)) <= {1, 2}
    # several volumes under torchrun
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "napari_voxseg", "train", "--pair", files / "image.tif", files / "strokes.tif",
         "--pair", files / "image.tif", files / "strokes.tif", "--out", tmp_path / "two",
         "--iterations", "2", "--patch-size", "16,32,32", "--threads", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert load_model(tmp_path / "two").config["training"]["volumes"] == 2


def test_each_process_draws_its_own_patches(small_volume, monkeypatch):
    from napari_voxseg.core import TrainConfig, distributed, train

    image, _, strokes = small_volume
    module = sys.modules["napari_voxseg.core.train"]
    drawn = {}
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "world", lambda r=rank: (r, 2))
        monkeypatch.setattr(distributed, "wrap", lambda model, device: model)
        monkeypatch.setattr(distributed, "mean", lambda value: value)
        original = module._distribute

        def spy(run, original=original, rank=rank):
            original(run)
            drawn[rank] = run.sampler.batch(2)[0]

        monkeypatch.setattr(module, "_distribute", spy)
        train(image, strokes, TrainConfig(iterations=1, patch_size=(8, 16, 16),
                                          two_stage=False, base_channels=4, depth=2))
    assert not np.array_equal(drawn[0], drawn[1])
