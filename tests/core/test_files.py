"""NIfTI and zarr files: round trips that keep values and voxel size, NIfTI orientation on an
asymmetric volume, the napari reader and writer, and damaged files."""

import nibabel as nib
import numpy as np
import pytest

from napari_voxseg._napari.reader import napari_get_reader
from napari_voxseg._napari.writer import write_single_layer
from napari_voxseg.core import VoxSegError, read_volume, write_volume
from napari_voxseg.core.files import read_nifti


def asymmetric(shape=(5, 6, 7)):
    volume = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    volume[1, 2, 3] = 999  # a marker no symmetry maps onto itself
    return volume


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".zarr", ".tif", ".npy", ".npz"])
def test_round_trip_keeps_values_and_voxel_size(tmp_path, suffix):
    volume = asymmetric()
    path = write_volume(tmp_path / f"v{suffix}", volume, (3.0, 1.0, 2.0))
    back, voxel = read_volume(path)
    np.testing.assert_array_equal(back, volume)
    if suffix == ".npy":  # the one format with nowhere to keep it
        assert voxel is None
    else:
        assert voxel == pytest.approx((3.0, 1.0, 2.0))
    # Written again over itself: still whole, and no temporary left beside it.
    write_volume(path, volume + 1, (3.0, 1.0, 2.0), overwrite=True)
    np.testing.assert_array_equal(read_volume(path)[0], volume + 1)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_nifti_orientation_is_brought_to_ras(tmp_path):
    """The same anatomy stored with the x axis flipped reads back identically."""
    zyx = asymmetric()
    xyz = zyx.transpose(2, 1, 0)
    nx = xyz.shape[0]
    nib.save(nib.Nifti1Image(xyz, np.diag([2.0, 1.0, 3.0, 1.0])), tmp_path / "ras.nii.gz")
    flipped = np.diag([-2.0, 1.0, 3.0, 1.0])
    flipped[0, 3] = 2.0 * (nx - 1)  # voxel i' = nx-1-i lands where voxel i did
    nib.save(nib.Nifti1Image(np.ascontiguousarray(xyz[::-1]), flipped),
             tmp_path / "las.nii.gz")
    ras, voxel = read_volume(tmp_path / "ras.nii.gz")
    las, _ = read_volume(tmp_path / "las.nii.gz")
    np.testing.assert_array_equal(ras, zyx)
    np.testing.assert_array_equal(las, zyx)
    assert las[1, 2, 3] == 999 and voxel == pytest.approx((3.0, 1.0, 2.0))


def test_nifti_bad_files(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), np.eye(4)),
             tmp_path / "series.nii.gz")
    with pytest.raises(VoxSegError, match="series"):
        read_volume(tmp_path / "series.nii.gz")
    noise = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    for suffix in (".nii", ".nii.gz"):
        nib.save(nib.Nifti1Image(noise, np.eye(4)), tmp_path / f"ok{suffix}")
        whole = (tmp_path / f"ok{suffix}").read_bytes()
        (tmp_path / f"cut{suffix}").write_bytes(whole[: len(whole) // 2])
    for name in ("cut.nii", "cut.nii.gz"):
        with pytest.raises(VoxSegError, match="not a readable NIfTI"):
            read_volume(tmp_path / name)
    with pytest.raises(VoxSegError, match="one .Z, Y, X. volume"):
        write_volume(tmp_path / "four.nii.gz", np.zeros((2, 3, 4, 5), np.float32))
    assert not (tmp_path / "four.nii.gz").exists()


def test_napari_reader_and_writer_keep_scale_and_affine(tmp_path):
    zyx = asymmetric().astype(np.float32)
    affine = np.array([[2.0, 0, 0, -10], [0, 1.0, 0, 5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0), affine), tmp_path / "scan.nii.gz")
    (data, meta, kind), = napari_get_reader(str(tmp_path / "scan.nii.gz"))(
        str(tmp_path / "scan.nii.gz"))
    assert kind == "image" and meta["name"] == "scan" and meta["scale"] == (3.0, 1.0, 2.0)
    np.testing.assert_array_equal(data, zyx)
    # A prediction saved from napari as NIfTI lands where the scan is.
    labels = (zyx > 50).astype(np.uint8) + 1
    written = write_single_layer(str(tmp_path / "scan_labels.nii.gz"), labels,
                                 {"scale": meta["scale"], "metadata": meta["metadata"]})
    out = nib.load(written[0])
    np.testing.assert_allclose(out.affine, affine)
    np.testing.assert_array_equal(read_volume(written[0])[0], labels)
    _, affine_back = read_nifti(tmp_path / "scan_labels.nii.gz")[1:]
    np.testing.assert_allclose(affine_back, affine)
    # Without an affine, the scale is the voxel size; other formats too.
    for name in ("plain.nii.gz", "plain.tif", "plain.zarr"):
        write_single_layer(str(tmp_path / name), labels, {"scale": (3.0, 1.0, 2.0)})
        back, voxel = read_volume(tmp_path / name)
        np.testing.assert_array_equal(back, labels)
        assert voxel == pytest.approx((3.0, 1.0, 2.0))


def test_napari_saves_a_labels_layer_with_our_writer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(asymmetric().astype(np.uint8) % 3, scale=(3.0, 1.0, 2.0),
                              name="seg")
    viewer.layers.save(str(tmp_path / "seg.nii.gz"), selected=False, plugin="napari-voxseg")
    back, voxel = read_volume(tmp_path / "seg.nii.gz")
    np.testing.assert_array_equal(back, layer.data)
    assert voxel == pytest.approx((3.0, 1.0, 2.0))


def test_labels_past_65535_stay_exact_in_a_tiff(tmp_path):
    labels = (np.arange(6 * 7 * 8, dtype=np.uint32).reshape(6, 7, 8) + 70_000)
    write_volume(tmp_path / "objects.tif", labels, (2.0, 1.0, 1.0))
    back, voxel = read_volume(tmp_path / "objects.tif")
    assert back.dtype == np.uint32 and np.array_equal(back, labels) and voxel == (2.0, 1.0, 1.0)


def test_a_nifti_with_one_time_point_is_one_volume(tmp_path):
    import nibabel as nib

    from napari_voxseg.core.files import read_volume_info

    data = np.random.default_rng(0).random((5, 6, 7, 1)).astype(np.float32)  # X, Y, Z, T
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "one.nii.gz"))
    array, info = read_volume_info(tmp_path / "one.nii.gz", time=True)
    assert array.shape == (7, 6, 5) and info["time_axis"] is None



@pytest.mark.parametrize("axes, shape, kind", [
    ("ZYX", (1, 4, 5), "imagej"), ("TZCYX", (2, 3, 2, 4, 5), "imagej"),
    ("ZCYX", (3, 1, 4, 5), "imagej"), ("TCZYX", (2, 3, 1, 4, 5), "ome"),
    ("ZYX", (1, 4, 5), "ome"), ("ZYX", (2, 4, 5), "ome"), ("ZYXS", (3, 4, 5, 3), "ome"),
    ("CZYX", (2, 3, 4, 5), "ome")])
def test_tiff_axes_from_metadata_equal_tifffile_s_own(tmp_path, axes, shape, kind):
    """tifffile 2026.9 removed get_axes(squeeze=False); the ImageJ or OME metadata give the
    same length-1 axes back (compared with what this tifffile's get_axes says)."""
    import tifffile

    from napari_voxseg.core.files import _axes_from_metadata

    path = tmp_path / ("a.ome.tif" if kind == "ome" else "a.tif")
    extra = {"photometric": "rgb"} if "S" in axes else {}
    tifffile.imwrite(path, np.zeros(shape, np.uint8), **{kind: True}, metadata={"axes": axes},
                     **extra)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if not hasattr(series, "get_axes"):
            pytest.skip("this tifffile has no get_axes to compare with")
        assert _axes_from_metadata(tif, series) == (series.get_axes(False),
                                                    tuple(series.get_shape(False)))


def test_plain_tiff_axes_without_get_axes():
    """Without get_axes, a TIFF that is neither ImageJ nor OME gives its squeezed axes."""
    from types import SimpleNamespace

    from napari_voxseg.core.files import _unsqueezed

    plain = SimpleNamespace(is_imagej=False, is_ome=False)
    series = SimpleNamespace(axes="ZYX", shape=[3, 4, 5], keyframe=SimpleNamespace())
    assert _unsqueezed(plain, series) == ("ZYX", (3, 4, 5))


def test_tiffs_read_the_same_without_get_axes(tmp_path, monkeypatch):
    """What tifffile 2026.9 (no TiffPageSeries.get_axes) reads: the same arrays and info."""
    import tifffile

    from napari_voxseg.core.files import read_volume_info

    rng = np.random.default_rng(0)
    cases = {"one.tif": ((1, 6, 7), False), "chan.tif": ((2, 3, 6, 7), False),
             "one.ome.tif": ((1, 6, 7), False), "chan.ome.tif": ((2, 3, 6, 7), False),
             "t.tif": ((2, 3, 6, 7), True), "t.ome.tif": ((2, 2, 3, 6, 7), True)}
    for name, (shape, time) in cases.items():
        write_volume(tmp_path / name, rng.random(shape).astype(np.float32), (2.0, 1.0, 1.0),
                     time=time)
    before = {name: read_volume_info(tmp_path / name, time=time)
              for name, (_, time) in cases.items()}
    if hasattr(tifffile.TiffPageSeries, "get_axes"):
        monkeypatch.delattr(tifffile.TiffPageSeries, "get_axes")
    for name, (_, time) in cases.items():
        array, info = read_volume_info(tmp_path / name, time=time)
        np.testing.assert_array_equal(array, before[name][0])
        assert info == before[name][1], name
