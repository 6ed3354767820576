"""Outputs get the permissions a plain open()/mkdir gives under the user's umask, not the
private mode of the temporary file or folder they were written as (colleagues on a shared
drive must be able to read a prediction or a model)."""

import os
import stat

import numpy as np
import pytest
from helpers import TINY

from napari_voxseg.core import TrainConfig, save_model, train, write_volume
from napari_voxseg.core.blocks import predict_blocks


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
def model(small_volume):
    image, _, strokes = small_volume
    return train(image, strokes, TrainConfig(**TINY, two_stage=False)).model


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_have_the_mode_the_umask_gives(tmp_path, small_volume, model, umask):
    image = small_volume[0]
    labels = (image > 0.5).astype(np.uint8) + 1
    before = os.umask(umask)
    try:
        files = [write_volume(tmp_path / f"pred{suffix}", labels, (2.0, 1.0, 1.0))
                 for suffix in (".tif", ".nii.gz", ".nii", ".npy", ".npz")]
        folders = [write_volume(tmp_path / "pred.zarr", labels, (2.0, 1.0, 1.0))]
        save_model(model, tmp_path / "model")
        folders.append(tmp_path / "model")
        files += [p for p in (tmp_path / "model").iterdir() if p.is_file()]
        predict_blocks(model, image, tmp_path / "blocks.zarr", block_shape=(8, 16, 16))
        folders.append(tmp_path / "blocks.zarr")
    finally:
        os.umask(before)
    for path in files:
        assert mode(path) == 0o666 & ~umask, (path.name, oct(mode(path)))
    for path in folders:
        assert mode(path) == 0o777 & ~umask, (path.name, oct(mode(path)))
