"""Model files from strangers never run code; a save killed at any moment never costs the model."""

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from napari_voxseg.core import VoxSegError, load_model, read_volume, save_model
from napari_voxseg.core.models import build_model

ARCH = {"num_classes": 2, "base_channels": 2, "depth": 2}


class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tiny_model(fill: float) -> torch.nn.Module:
    model = build_model(ARCH)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(fill)
    model.config = {
        "format": "napari-voxseg-model", "format_version": 1,
        "architecture": {"name": "unet3d", "in_channels": 1, "norm": "instance", **ARCH},
        "classes": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "normalization": {"method": "percentile", "low": 1.0, "high": 99.8},
        "patch_size": [8, 8, 8], "voxel_size": None, "training": {}, "versions": {},
    }
    return model


def test_a_pickle_in_place_of_the_weights_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    save_model(_tiny_model(0.1), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(VoxSegError, match="safetensors"):
        load_model(tmp_path / "m")
    torch.save({"state": Payload(marker)}, tmp_path / "m" / "model.safetensors")
    with pytest.raises(VoxSegError, match="safetensors"):
        load_model(tmp_path / "m")
    # A PyTorch checkpoint (pickle) instead of safetensors is not even opened.
    os.remove(tmp_path / "m" / "model.safetensors")
    torch.save({"state": Payload(marker)}, tmp_path / "m" / "model.pt")
    with pytest.raises(VoxSegError, match="no model.safetensors"):
        load_model(tmp_path / "m")
    assert not marker.exists()


def test_a_pickled_array_file_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    np.save(tmp_path / "evil.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "evil.npz", data=np.array([Payload(marker)], dtype=object))
    for name in ("evil.npy", "evil.npz"):
        with pytest.raises(VoxSegError, match="pickle"):
            read_volume(tmp_path / name)
    assert not marker.exists()


def test_config_is_checked_before_any_tensor_is_built(tmp_path):
    save_model(_tiny_model(0.1), tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    good = json.loads(config_path.read_text())
    for change, fragment in [
        ({"format": "other"}, "not a napari-voxseg-model"),
        ({"format_version": 99}, "newer napari-voxseg"),
        ({"architecture": {**good["architecture"], "base_channels": 10**9}}, "base_channels"),
        ({"architecture": {**good["architecture"], "depth": "3"}}, "depth"),
        ({"classes": [{"id": 1}]}, "classes"),
        ({"patch_size": [7, 8, 8]}, "patch_size"),
        ({"architecture": {**good["architecture"], "num_classes": 3},
          "classes": [{}, {}, {}]}, "needs"),
    ]:
        config_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(VoxSegError, match=fragment):
            load_model(tmp_path / "m")


_SAVER = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_model_safety import _tiny_model
from napari_voxseg.core import save_model
models = [_tiny_model(0.1), _tiny_model(0.2)]
save_model(models[0], {path!r}, overwrite=True)
print("ready", flush=True)
i = 1
while True:
    save_model(models[i % 2], {path!r}, overwrite=True)
    i += 1
"""


def test_killing_a_save_at_random_moments_never_leaves_a_broken_model(tmp_path):
    path = tmp_path / "model"
    script = _SAVER.format(tests=os.path.dirname(__file__), path=str(path))
    rng = random.Random(0)
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        model = load_model(path)  # the previous model or the new one, whole
        values = {float(p.detach().flatten()[0]) for p in model.parameters()}
        assert len(values) == 1 and values.pop() in (pytest.approx(0.1), pytest.approx(0.2))
    # Leftovers of killed saves are swept by the next save.
    save_model(_tiny_model(0.3), path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_save_killed_between_its_two_renames_is_recovered(tmp_path):
    """The state a kill leaves between 'old model aside' and 'new model in place'."""
    save_model(_tiny_model(0.1), tmp_path / "model")
    os.replace(tmp_path / "model", tmp_path / ".model.abc123.old")
    (tmp_path / ".model.def456.tmp").mkdir()  # the new model, half written
    model = load_model(tmp_path / "model")
    assert float(next(model.parameters()).detach().flatten()[0]) == pytest.approx(0.1)
    assert (tmp_path / "model" / "config.json").is_file()
