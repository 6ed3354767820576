"""Killing a prediction while it writes its output (SIGKILL, at random moments, many times)
leaves the previous output or the new one, whole, never a broken one."""

import random
import signal
import subprocess
import sys
import time

import numpy as np
from helpers import TINY

from napari_voxseg.core import TrainConfig, load_model, read_volume, save_model, train
from napari_voxseg.core.blocks import open_zarr, predict_blocks

_WRITER = """
import sys
import numpy as np
from napari_voxseg.core import load_model, write_volume
from napari_voxseg.core.blocks import predict_blocks
image = np.load({image!r})
models = [load_model(path) for path in {models!r}]
outputs = [np.full(image.shape, v, np.uint8) for v in (1, 2)]
i = 0
while True:
    if i == 1:  # warmed up, and the outputs exist: the kills hit later writes
        print("ready", flush=True)
    predict_blocks(models[i % 2], image, {store!r}, block_shape=(4, 8, 8), overwrite=True)
    write_volume({npy!r}, outputs[i % 2], overwrite=True)
    i += 1
"""


def test_killed_predictions_leave_a_whole_output(tmp_path, small_volume):
    image = small_volume[0]
    np.save(tmp_path / "image.npy", image)
    store, npy = tmp_path / "labels.zarr", tmp_path / "labels.npy"
    strokes = np.zeros(image.shape, np.uint8)
    strokes[4, 2:30, 3], strokes[8, 10:20, 12:14] = 1, 2
    models = []  # trained once here; each killed process loads them
    for seed in (0, 1):
        models.append(str(tmp_path / f"model{seed}"))
        save_model(train(image, strokes, TrainConfig(**TINY, seed=seed)).model, models[-1])
    script = _WRITER.format(models=models, image=str(tmp_path / "image.npy"),
                            store=str(store), npy=str(npy))
    rng = random.Random(0)
    seen = 0
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.2, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if store.exists() or any(tmp_path.glob(".labels.zarr.*.old")):
            labels = open_zarr(store)[:]  # whole: every block written, values 1..2
            assert labels.shape == image.shape and set(np.unique(labels)) <= {1, 2}
            seen += 1
        if npy.exists():
            data, _ = read_volume(npy)
            assert len(np.unique(data)) == 1 and data.flat[0] in (1, 2)
    assert seen == 10  # every kill came after the first store was written
    # The next prediction sweeps what the killed ones left behind.
    predict_blocks(load_model(models[0]), image, store, overwrite=True)
    assert not list(tmp_path.glob(".labels.zarr.*"))
