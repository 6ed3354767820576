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
