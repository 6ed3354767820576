"""Property tests: random shapes and dtypes never crash the checks or the reader.

The only error allowed is VoxSegError (one clear line), and the input is never modified.
"""

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_voxseg.core import VoxSegError, check_image, check_labels, class_weights
from napari_voxseg.core.files import read_volume, write_volume
from napari_voxseg.core.targets import check_multilabel, check_regression

DTYPES = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(),
                   hnp.boolean_dtypes(), hnp.complex_number_dtypes(),
                   st.just(np.dtype("U3")), st.just(np.dtype(object)))
ARRAYS = hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=6, min_side=0, max_side=5))


def assert_unchanged(array, before):
    """Same values; for object arrays the same objects (a NaN object never equals itself)."""
    if array.dtype == object:
        assert array.shape == before.shape
        assert all(a is b for a, b in zip(array.ravel(), before.ravel()))
    else:
        np.testing.assert_array_equal(array, before)


FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(ARRAYS)
def test_check_image_accepts_or_explains(array):
    before = array.copy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = check_image(array)
    except VoxSegError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert out.ndim == 4 and out.dtype == np.float32 and np.isfinite(out).all()
    assert_unchanged(array, before)


@FAST
@given(ARRAYS, st.one_of(st.none(), st.integers(-3, 300)))
def test_check_labels_accepts_or_explains(array, num_classes):
    before = array.copy()
    shape = array.shape if array.ndim == 3 else (2, 2, 2)
    try:
        labels, k = check_labels(array, shape, num_classes=num_classes)
    except VoxSegError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert k >= 2 and labels.max() <= k
        for spec in ("auto", "median"):
            w = class_weights(spec, labels, k)
            assert np.isfinite(w).all() and (w >= 0).all()
    assert_unchanged(array, before)


@FAST
@given(st.lists(ARRAYS, min_size=0, max_size=3))
def test_multilabel_checks_accept_or_explain(arrays):
    before = [a.copy() for a in arrays]
    shape = arrays[0].shape if arrays and arrays[0].ndim == 3 else (2, 2, 2)
    try:
        data, k = check_multilabel(arrays, shape)
    except VoxSegError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert data.shape == (k, *shape) and set(np.unique(data)) <= {0, 1, 2}
        for spec in ("auto", "median"):
            w = class_weights(spec, data, k, task="multilabel")
            assert np.isfinite(w).all() and (w >= 0).all()
    for a, b in zip(arrays, before):
        assert_unchanged(a, b)


@FAST
@given(ARRAYS, st.one_of(st.none(), ARRAYS))
def test_regression_checks_accept_or_explain(target, mask):
    before = target.copy()
    shape = target.shape if target.ndim == 3 else (2, 2, 2)
    try:
        values = check_regression(target, shape, mask)
    except VoxSegError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert values.shape == (1, *shape) and values.dtype == np.float32
        assert np.isfinite(values).any()
    assert_unchanged(target, before)


@FAST
@given(st.one_of(st.text(max_size=12), st.lists(st.floats(allow_nan=True), max_size=5)),
       st.integers(2, 5))
def test_class_weights_accept_or_explain(spec, k):
    labels = np.arange(12, dtype=np.uint8) % (k + 1)
    try:
        w = class_weights(spec, labels, k)
    except VoxSegError as exc:
        assert "\n" not in str(exc)
    else:
        assert w is None or (w.shape == (k,) and np.isfinite(w).all() and (w >= 0).all())


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600),
       suffix=st.sampled_from([".tif", ".npy", ".npz", ".nii", ".nii.gz"]))
def test_reader_explains_any_bytes(tmp_path, data, suffix):
    from napari_voxseg._napari.reader import napari_get_reader

    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    try:
        read_volume(path)
    except VoxSegError as exc:
        assert "\n" not in str(exc)
    reader = napari_get_reader(str(path))  # the napari hook never raises
    if reader is not None:
        try:
            reader(str(path))
        except VoxSegError as exc:
            assert "\n" not in str(exc)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(array=hnp.arrays(st.sampled_from([np.uint8, np.uint16, np.float32, np.int32]),
                        hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6),
                        elements={"min_value": 0, "max_value": 200}),
       suffix=st.sampled_from([".tif", ".npy", ".npz"]), cut=st.floats(0.0, 1.0))
def test_truncated_files_are_explained(tmp_path, array, suffix, cut):
    path = write_volume(tmp_path / f"v{suffix}", array, overwrite=True)
    full = path.read_bytes()
    back, _ = read_volume(path)
    np.testing.assert_array_equal(back, array)
    path.write_bytes(full[: int(len(full) * cut)])
    try:
        read_volume(path)
    except VoxSegError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 200, 3)])
def test_thin_volumes_are_accepted(shape):
    assert check_image(np.ones(shape, np.uint8)).shape == (1, *shape)


# ---- NIfTI, zarr and OME-TIFF (issue 6's formats) ---------------------------------------------
VOLUMES = hnp.arrays(st.sampled_from([np.uint8, np.int16, np.uint16, np.float32, np.float64]),
                     hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6),
                     elements={"min_value": 0, "max_value": 200})
VOXELS = st.tuples(*[st.floats(0.05, 20.0)] * 3)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(array=VOLUMES, voxel=VOXELS, suffix=st.sampled_from([".nii", ".nii.gz", ".zarr"]),
       cut=st.floats(0.0, 1.0))
def test_nifti_and_zarr_round_trip_and_damage_is_explained(tmp_path, array, voxel, suffix,
                                                           cut):
    # a new folder for each example: a damaged store is no longer one voxseg may replace
    path = write_volume(Path(tempfile.mkdtemp(dir=tmp_path)) / f"v{suffix}", array, voxel)
    back, voxel_back = read_volume(path)
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(voxel_back, voxel, rtol=1e-5)
    # Damage it: cut the file, or for a store its metadata.
    meta = path / "zarr.json" if path.is_dir() else path
    full = meta.read_bytes()
    meta.write_bytes(full[: int(len(full) * cut)])
    try:
        read_volume(path)
    except VoxSegError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(channels=st.integers(1, 3), z=st.integers(1, 4), yx=st.tuples(st.integers(1, 6),
                                                                     st.integers(2, 6)),
       order=st.sampled_from(["ZCYX", "CZYX"]), voxel=VOXELS,
       dtype=st.sampled_from([np.uint8, np.uint16, np.float32]))
def test_ome_tiff_any_channel_layout(tmp_path, channels, z, yx, order, voxel, dtype):
    import tifffile

    from napari_voxseg.core.files import read_volume_info

    czyx = (np.arange(channels * z * yx[0] * yx[1]) % 200).astype(dtype).reshape(
        channels, z, *yx)
    stored = czyx if order == "CZYX" else np.moveaxis(czyx, 0, 1)
    tifffile.imwrite(tmp_path / "v.ome.tif", stored, ome=True, photometric="minisblack",
                     metadata={"axes": order, "PhysicalSizeZ": voxel[0],
                               "PhysicalSizeY": voxel[1], "PhysicalSizeX": voxel[2]})
    array, info = read_volume_info(tmp_path / "v.ome.tif")
    np.testing.assert_array_equal(array, czyx if channels > 1 else czyx[0])
    assert info["channel_axis"] == (0 if channels > 1 else None)
    np.testing.assert_allclose(info["voxel_size"], voxel, rtol=1e-5)
