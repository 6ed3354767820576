"""The napari reader and the sample data."""

import numpy as np
import pytest

from napari_voxseg._napari.reader import napari_get_reader
from napari_voxseg._napari.sample import make_sample_data
from napari_voxseg.core import VoxSegError, write_volume


def test_reader_takes_our_files_and_keeps_voxel_size(tmp_path):
    write_volume(tmp_path / "cells.tif", np.ones((4, 8, 8), np.float32), (2.0, 0.5, 0.5))
    write_volume(tmp_path / "cells_labels.npz", np.ones((4, 8, 8), np.uint8), (2.0, 0.5, 0.5))
    reader = napari_get_reader(str(tmp_path / "cells.tif"))
    (data, meta, kind), = reader(str(tmp_path / "cells.tif"))
    assert kind == "image" and data.shape == (4, 8, 8) and meta["scale"] == pytest.approx(
        (2.0, 0.5, 0.5)) and meta["name"] == "cells"
    (_, meta, kind), = napari_get_reader(str(tmp_path / "cells_labels.npz"))(
        str(tmp_path / "cells_labels.npz"))
    assert kind == "labels" and meta["scale"] == pytest.approx((2.0, 0.5, 0.5))


def test_reader_declines_other_files_without_raising(tmp_path):
    for path in ("x.png", "x.csv", str(tmp_path), ["a.tif", "b.jpg"], None, 42):
        assert napari_get_reader(path) is None


def test_reader_reports_damaged_files(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(VoxSegError, match="not a readable"):
        napari_get_reader(str(tmp_path / "bad.npy"))(str(tmp_path / "bad.npy"))


def test_sample_has_image_strokes_and_truth_of_two_plus_classes():
    (image, im_meta, k1), (truth, _, k2), (strokes, _, k3) = make_sample_data()
    assert (k1, k2, k3) == ("image", "labels", "labels")
    assert image.shape == truth.shape == strokes.shape and 2e5 <= image.size <= 1e6
    assert set(np.unique(truth)) == {1, 2, 3} and set(np.unique(strokes)) == {0, 1, 2, 3}
    assert (truth[strokes > 0] == strokes[strokes > 0]).all()  # strokes are correct
    assert im_meta["scale"] == (0.5, 0.5, 0.5)


def test_zarr_stores_open_lazily_with_their_voxel_size(tmp_path, small_volume):
    import dask.array as da
    import zarr

    from napari_voxseg.core import TrainConfig, train
    from napari_voxseg.core.blocks import predict_blocks

    image, _, strokes = small_volume
    model = train(image, strokes, TrainConfig(iterations=2, patch_size=(8, 16, 16), depth=2,
                                              base_channels=4)).model
    predict_blocks(model, image, tmp_path / "scan labels.zarr", voxel_size=(2.0, 1.0, 1.0),
                   uncertainty=tmp_path / "scan uncertainty.zarr")
    reader = napari_get_reader(str(tmp_path / "scan labels.zarr"))
    (data, meta, kind), = reader(str(tmp_path / "scan labels.zarr"))
    assert kind == "labels" and isinstance(data, da.Array) and data.shape == image.shape
    assert meta["scale"] == (2.0, 1.0, 1.0) and meta["name"] == "scan labels"
    (data, meta, kind), = reader(str(tmp_path / "scan uncertainty.zarr"))
    assert kind == "image" and data.dtype == np.float32

    # OME-Zarr: two levels, the scale in its metadata, a channel axis.
    root = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    volume = np.arange(2 * 8 * 16 * 16, dtype=np.uint16).reshape(2, 8, 16, 16)
    root.create_array("0", shape=volume.shape, dtype=volume.dtype)[:] = volume
    root.create_array("1", shape=(2, 4, 8, 8), dtype=volume.dtype)[:] = volume[:, ::2, ::2, ::2]
    root.attrs["multiscales"] = [{
        "axes": [{"name": "c", "type": "channel"}, {"name": "z", "type": "space"},
                 {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 3.0, 0.5, 0.5]}]},
                     {"path": "1", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 6.0, 1.0, 1.0]}]}]}]
    (data, meta, kind), = napari_get_reader(str(tmp_path / "ome.zarr"))(str(tmp_path / "ome.zarr"))
    assert kind == "image" and meta["multiscale"] and meta["channel_axis"] == 0
    assert [d.shape for d in data] == [(2, 8, 16, 16), (2, 4, 8, 8)]
    assert meta["scale"] == (3.0, 0.5, 0.5)
    np.testing.assert_array_equal(np.asarray(data[0][1, 2]), volume[1, 2])

    # A folder that is not a store, and an empty group, are declined or refused clearly.
    (tmp_path / "plain.zarr").mkdir()
    with pytest.raises(VoxSegError, match="zarr"):
        napari_get_reader(str(tmp_path / "plain.zarr"))(str(tmp_path / "plain.zarr"))
    assert napari_get_reader(str(tmp_path)) is None


def test_zarr_layers_open_in_a_viewer(make_napari_viewer, tmp_path):
    import zarr

    store = zarr.open_array(str(tmp_path / "cells.zarr"), mode="w", shape=(4, 8, 8),
                            dtype="float32")
    store[:] = 1.0
    store.attrs["voxel_size"] = [2.0, 0.5, 0.5]
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "cells.zarr"), plugin="napari-voxseg")
    assert tuple(layers[0].scale) == (2.0, 0.5, 0.5) and layers[0].data.shape == (4, 8, 8)
