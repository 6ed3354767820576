"""A NIfTI prediction lies on its scan: written in the input's own orientation with its affine
(an oblique, LPS-like volume with its origin off zero), from the command line, the Python API,
a time series and napari's writer."""

import nibabel as nib
import numpy as np
import pytest
from helpers import run_cli

from napari_voxseg.core import load_model, predict, read_volume, write_volume
from napari_voxseg.core.files import nifti_affine, read_nifti, read_volume_info


def oblique_affine() -> np.ndarray:
    """Voxel axes stored as (S, L, P)-ish: permuted, flipped, rotated 0.2 rad about Z and
    shifted; voxel sizes 2.0, 1.0 and 1.0 mm."""
    turn = np.array([[np.cos(0.2), -np.sin(0.2), 0], [np.sin(0.2), np.cos(0.2), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = turn @ np.diag([-1.0, -1.0, 2.0])
    affine[:3, 3] = [41.5, -17.0, 63.25]
    return affine @ np.eye(4)[[2, 0, 1, 3]]  # stored axes (j, k, i) of the canonical ones


@pytest.fixture(scope="module")
def scan(tmp_path_factory, small_volume):
    """The small volume and its strokes as NIfTI files stored in an oblique orientation."""
    image, _, strokes = small_volume
    folder = tmp_path_factory.mktemp("nifti")
    affine = oblique_affine()
    for name, array in (("image.nii.gz", image), ("strokes.nii.gz", strokes)):
        # As stored: the canonical (X, Y, Z) = (32, 32, 16) data put in the stored order.
        stored = np.ascontiguousarray(array.transpose(2, 1, 0).transpose(1, 2, 0))
        nib.save(nib.Nifti1Image(stored, affine), str(folder / name))
    return folder


def test_the_scan_reads_in_ras_order(scan, small_volume):
    image, _ = read_volume(scan / "image.nii.gz")
    assert image.shape == small_volume[0].shape
    assert nib.aff2axcodes(oblique_affine()) != ("R", "A", "S")


def test_command_line_prediction_keeps_the_scan_s_affine_and_orientation(scan, tmp_path):
    proc = run_cli("train", scan / "image.nii.gz", scan / "strokes.nii.gz", "--out",
                   tmp_path / "model", "--iterations", 4, "--patch-size", "8,16,16")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "labels.nii.gz"
    proc = run_cli("predict", tmp_path / "model", scan / "image.nii.gz", "--out", out)
    assert proc.returncode == 0, proc.stderr
    written, source = nib.load(str(out)), nib.load(str(scan / "image.nii.gz"))
    np.testing.assert_allclose(written.affine, source.affine)
    assert written.shape == source.shape  # the stored order of the input
    image, _ = read_volume(scan / "image.nii.gz")
    labels, _, _ = read_nifti(out)
    np.testing.assert_array_equal(labels, predict(load_model(tmp_path / "model"), image))


def test_python_api_writes_like_the_scan(scan, tmp_path):
    image, _, _ = read_nifti(scan / "image.nii.gz")
    for like in (scan / "image.nii.gz", nifti_affine(scan / "image.nii.gz")):
        out = write_volume(tmp_path / "copy.nii.gz", image, like=like, overwrite=True)
        written, source = nib.load(str(out)), nib.load(str(scan / "image.nii.gz"))
        np.testing.assert_allclose(written.affine, source.affine)
        np.testing.assert_array_equal(np.asanyarray(written.dataobj),
                                      np.asanyarray(source.dataobj))
    # Without like: RAS+ data with the canonical affine, on the scan too.
    _, _, canonical = read_nifti(scan / "image.nii.gz")
    out = write_volume(tmp_path / "plain.nii.gz", image, affine=canonical)
    assert np.allclose(nib.as_closest_canonical(nib.load(str(out))).affine,
                       nib.as_closest_canonical(nib.load(str(scan / "image.nii.gz"))).affine)


def test_a_series_keeps_the_affine(scan, tmp_path):
    image, _, _ = read_nifti(scan / "image.nii.gz")
    frames = np.stack([image, image + 1])
    out = write_volume(tmp_path / "series.nii.gz", frames, time=True,
                       like=scan / "image.nii.gz")
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, oblique_affine())
    assert written.shape == (*nib.load(str(scan / "image.nii.gz")).shape, 2)
    again, _, _ = read_nifti(out, time=True)
    np.testing.assert_array_equal(again, frames)


def test_napari_writer_and_result_layers_keep_the_scan(scan, tmp_path):
    from napari_voxseg._napari.reader import read_layers
    from napari_voxseg._napari.writer import write_single_layer
    from napari_voxseg._qt.results import RESULT_KEY, result_metadata

    data, meta, _ = read_layers(str(scan / "image.nii.gz"))[0]
    layer = type("Layer", (), {"metadata": meta["metadata"]})()
    result = result_metadata(layer)
    assert result[RESULT_KEY] and result["nifti_source_affine"] == meta["metadata"][
        "nifti_source_affine"]
    labels = (np.asarray(data) > np.median(data)).astype(np.uint8) + 1
    path = write_single_layer(str(tmp_path / "pred.nii.gz"), labels,
                              {"scale": meta.get("scale"), "metadata": result})[0]
    np.testing.assert_allclose(nib.load(path).affine, oblique_affine())
    again, _, _ = read_nifti(path)
    np.testing.assert_array_equal(again, labels)


def test_a_series_layer_and_its_prediction_save_with_time_first(tmp_path):
    """A 4D NIfTI opened in napari, and a prediction of it, save as a series (not refused as
    4D, not time read back as channels)."""
    from napari_voxseg._napari.reader import read_layers
    from napari_voxseg._napari.writer import write_single_layer
    from napari_voxseg._qt.results import result_metadata

    frames = np.random.default_rng(0).random((2, 4, 5, 6)).astype(np.float32)
    write_volume(tmp_path / "series.nii.gz", frames, (2.0, 1.0, 1.0), time=True)
    data, meta, _ = read_layers(str(tmp_path / "series.nii.gz"))[0]
    layer = type("Layer", (), {"metadata": meta["metadata"]})()
    labels = (np.asarray(data) > 0.5).astype(np.uint8) + 1
    for out, array, metadata in (("copy.nii.gz", np.asarray(data), meta["metadata"]),
                                 ("pred.nii.gz", labels, result_metadata(layer)),
                                 ("pred.tif", labels, result_metadata(layer))):
        path = write_single_layer(str(tmp_path / out), array,
                                  {"scale": meta.get("scale"), "metadata": metadata})[0]
        again, info = read_volume_info(path, time=True)
        assert info["time_axis"] == 0 and again.shape == array.shape, out
        np.testing.assert_array_equal(again, array)
