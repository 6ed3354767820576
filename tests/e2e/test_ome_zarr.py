"""Zarr outputs are OME-Zarr images (NGFF 0.5): ome-zarr's own reader (what napari-ome-zarr,
Fiji/MoBIE and neuroglancer follow) finds their axes and voxel size, in memory and block-wise,
and voxseg and napari read them back."""

import numpy as np
import pytest
from helpers import TINY

from napari_voxseg.core import TrainConfig, train, write_volume
from napari_voxseg.core.blocks import predict_blocks
from napari_voxseg.core.objects import write_objects
from napari_voxseg.core.outputs import written_by_voxseg
from napari_voxseg.core.zarrs import open_zarr, open_zarr_levels

ome_zarr = pytest.importorskip("ome_zarr")


def read_with_ome_zarr(path):
    """(axis names, scale of level 0, shape of level 0) as ome-zarr's reader sees them."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    node = next(n for n in Reader(parse_url(str(path)))() if any(
        isinstance(s, Multiscales) for s in n.specs))
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    return [a["name"] for a in node.metadata["axes"]], scale, tuple(node.data[0].shape)


def test_a_volume_written_to_zarr_is_an_ome_zarr_image(tmp_path):
    volume = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    write_volume(tmp_path / "v.zarr", volume, (2.0, 1.0, 0.5))
    assert read_with_ome_zarr(tmp_path / "v.zarr") == (["z", "y", "x"], [2.0, 1.0, 0.5],
                                                       (4, 5, 6))
    levels, info = open_zarr_levels(tmp_path / "v.zarr")
    np.testing.assert_array_equal(levels[0][:], volume)
    assert info["voxel_size"] == (2.0, 1.0, 0.5)
    assert written_by_voxseg(tmp_path / "v.zarr", "zarr")  # may be replaced by voxseg
    channels = np.zeros((3, 4, 5, 6), np.float32)
    write_volume(tmp_path / "c.zarr", channels, (2.0, 1.0, 0.5))
    axes, scale, _ = read_with_ome_zarr(tmp_path / "c.zarr")
    assert axes == ["c", "z", "y", "x"] and scale == [1.0, 2.0, 1.0, 0.5]
    assert open_zarr_levels(tmp_path / "c.zarr")[1]["channel_axis"] == 0


def test_block_wise_outputs_and_objects_are_ome_zarr_images(small_volume, tmp_path):
    image, _, strokes = small_volume
    model = train(image, strokes, TrainConfig(**TINY)).model
    predict_blocks(model, image[None], tmp_path / "labels.zarr",
                   probabilities=tmp_path / "p.zarr", block_shape=(8, 16, 16),
                   voxel_size=(2.0, 1.0, 1.0))
    assert read_with_ome_zarr(tmp_path / "labels.zarr") == (
        ["z", "y", "x"], [2.0, 1.0, 1.0], image.shape)
    axes, scale, shape = read_with_ome_zarr(tmp_path / "p.zarr")
    assert axes == ["c", "z", "y", "x"] and scale == [1.0, 2.0, 1.0, 1.0]
    assert shape == (2, *image.shape)
    write_objects(tmp_path / "labels.zarr", tmp_path / "objects.zarr", [2],
                  voxel_size=(2.0, 1.0, 1.0), num_classes=2)
    assert read_with_ome_zarr(tmp_path / "objects.zarr")[:2] == (["z", "y", "x"],
                                                                  [2.0, 1.0, 1.0])
    assert open_zarr(tmp_path / "objects.zarr").shape == image.shape


def test_napari_opens_an_output_with_its_scale(tmp_path):
    from napari_voxseg._napari.reader import read_layers

    write_volume(tmp_path / "v.zarr", np.ones((4, 5, 6), np.uint8), (2.0, 1.0, 0.5))
    (data, meta, _), = read_layers(str(tmp_path / "v.zarr"))
    assert tuple(meta["scale"]) == (2.0, 1.0, 0.5) and data.shape == (4, 5, 6)


def test_napari_opens_voxseg_labels_stores_as_labels_whatever_their_name(tmp_path):
    """voxseg's mark is on the OME-Zarr group: a block-wise labels store named anything opens
    as one Labels layer (a multi-label one too, not one image per class)."""
    from napari_voxseg._napari.reader import read_zarr_layers
    from napari_voxseg.core.outputs import ZARR_MARK
    from napari_voxseg.core.zarrs import create_image

    for name, shape in (("result.zarr", (4, 5, 6)), ("ml.zarr", (3, 4, 5, 6))):
        create_image(tmp_path / name, shape, "uint8", voxel_size=(2.0, 1.0, 1.0),
                     attrs={ZARR_MARK: "labels"})[...] = 1
        layers = read_zarr_layers(str(tmp_path / name))
        assert [kind for _, _, kind in layers] == ["labels"] and layers[0][0].shape == shape
