"""Many volumes at once from the command line: predict a list or a dataset folder into
--out-dir (one line per file, existing outputs skipped, a failed file reported while the rest
go on)."""

import numpy as np
from helpers import run_cli as run
from helpers import tree

from napari_voxseg.core import load_model, predict, read_volume, write_volume


def _folder(root, small_volume):
    """images/ with three good volumes in three formats and one damaged TIFF."""
    image, _, _ = small_volume
    images = root / "images"
    images.mkdir(parents=True)
    write_volume(images / "a.tif", image, (2.0, 1.0, 1.0))
    write_volume(images / "b.npy", image[:, ::-1].copy())
    write_volume(images / "c.nii.gz", image[:, :, ::-1].copy(), (2.0, 1.0, 1.0))
    (images / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 40)
    return images


def test_predict_many_goes_on_past_a_broken_file(trained, small_volume, tmp_path):
    images = _folder(tmp_path / "data", small_volume)
    out = tmp_path / "preds"
    files = [images / n for n in ("a.tif", "broken.tif", "b.npy", "c.nii.gz")]
    proc = run("predict", trained, *files, "--out-dir", out)
    assert proc.returncode == 1, proc.stderr  # one failed
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5 and "Traceback" not in proc.stdout + proc.stderr
    assert lines[1].startswith("[2/4] broken.tif: failed: ") and "broken.tif" in lines[1]
    assert lines[0].startswith("[1/4] a.tif -> ") and lines[0].endswith(" s")
    assert lines[-1].startswith("predicted 3, skipped 0, failed 1 of 4 images")
    assert lines[-1].endswith("failed: broken.tif")
    model = load_model(trained)
    for name, written in (("a.tif", "a.tif"), ("b.npy", "b.npy"), ("c.nii.gz", "c.nii.gz")):
        image, _ = read_volume(images / name)
        np.testing.assert_array_equal(read_volume(out / written)[0], predict(model, image))
    assert read_volume(out / "a.tif")[1] == (2.0, 1.0, 1.0)
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.npy", "c.nii.gz"]

    # again: what is done is skipped, the broken one is tried (and reported) again
    before = tree(out)
    proc = run("predict", trained, *files, "--out-dir", out)
    assert proc.returncode == 1
    assert proc.stdout.count("skipped, ") == 3 and tree(out) == before
    proc = run("predict", trained, images / "a.tif", "--out-dir", out, "--overwrite")
    assert proc.returncode == 0 and "predicted 1, skipped 0, failed 0 of 1" in proc.stdout


def test_predict_a_dataset_folder(trained, small_volume, tmp_path):
    images = _folder(tmp_path / "data", small_volume)
    (images / "broken.tif").unlink()
    inputs = tree(images)
    proc = run("predict", trained, "--dataset", tmp_path / "data", "--out-dir",
               tmp_path / "out", "--out-format", "npy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "b.npy", "c.npy"]
    assert tree(images) == inputs  # the inputs are untouched
    # a folder without images/ is taken as it is
    proc = run("predict", trained, "--dataset", images, "--out-dir", tmp_path / "out2")
    assert proc.returncode == 0 and "predicted 3, skipped 0, failed 0 of 3" in proc.stdout


def test_bad_batches_are_refused_before_any_work(trained, small_volume, tmp_path):
    images = _folder(tmp_path / "data", small_volume)
    (images / "notes.txt").write_text("mine")
    cases = [
        (["--dataset", tmp_path / "data", "--out-dir", tmp_path / "o"], "notes.txt"),
        ([images / "a.tif", images / "b.npy", "--out", tmp_path / "o.tif"], "--out-dir"),
        ([images / "a.tif", "--out-dir", images], "a.tif"),  # would replace the image
        ([images / "a.tif", "--out-dir", tmp_path / "o", "--probabilities",
          tmp_path / "p.npy"], "--probabilities"),
        (["--out-dir", tmp_path / "o"], "no image"),
        ([images / "a.tif"], "--out"),
    ]
    before = tree(tmp_path)
    for args, word in cases:
        proc = run("predict", trained, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        message = proc.stderr.strip()
        assert message.startswith("error: ") and "\n" not in message and word in message, \
            (args, message)
        assert proc.stdout == "" and tree(tmp_path) == before, args


def test_a_time_series_is_predicted_frame_by_frame(trained, small_volume, tmp_path):
    import tifffile

    from napari_voxseg.core.series import read_series

    image, _, _ = small_volume
    frames = np.stack([image, image[:, ::-1], np.roll(image, 5, axis=2)])  # T, Z, Y, X
    tifffile.imwrite(tmp_path / "movie.ome.tif", frames, ome=True, photometric="minisblack",
                     metadata={"axes": "TZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeY": 1.0,
                               "PhysicalSizeX": 1.0})
    proc = run("predict", trained, tmp_path / "movie.ome.tif", "--out",
               tmp_path / "pred.ome.tif")
    assert proc.returncode == 0, proc.stderr
    labels, voxel, series = read_series(tmp_path / "pred.ome.tif")
    model = load_model(trained)
    assert series and labels.shape == frames.shape and voxel == (2.0, 1.0, 1.0)
    for t in range(3):
        np.testing.assert_array_equal(labels[t], predict(model, frames[t]))
    # an array that does not say: --time-axis (here Z, T, Y, X on disk); results T first
    np.save(tmp_path / "movie.npy", np.moveaxis(frames, 0, 1))
    proc = run("predict", trained, tmp_path / "movie.npy", "--time-axis", 1, "--out",
               tmp_path / "pred.tif", "--uncertainty", tmp_path / "u.npy")
    assert proc.returncode == 0, proc.stderr
    again, _, series = read_series(tmp_path / "pred.tif")
    assert series and np.array_equal(again, labels)
    assert np.load(tmp_path / "u.npy").shape == frames.shape


def test_objects_of_a_prediction(trained, files, tmp_path):
    """--instances writes the objects of the chosen classes beside the labels, in memory and
    block by block (the same objects), and an unknown class is refused before any work."""
    from napari_voxseg.core.instances import instance_labels
    from napari_voxseg.core.zarrs import open_zarr

    proc = run("predict", trained, files / "image.tif", "--out", tmp_path / "p.tif",
               "--instances", "2")
    assert proc.returncode == 0, proc.stderr
    labels, _ = read_volume(tmp_path / "p.tif")
    objects, voxel = read_volume(tmp_path / "p-objects.tif")
    assert voxel == (2.0, 1.0, 1.0) and "objects in" in proc.stdout
    assert objects.max() >= 1 and np.array_equal(objects > 0, labels == 2)
    np.testing.assert_array_equal(objects, instance_labels(labels, [2], voxel_size=voxel))

    proc = run("predict", trained, files / "image.tif", "--out", tmp_path / "p.zarr",
               "--instances", "2", "--block", "8,16,16")
    assert proc.returncode == 0, proc.stderr
    blocks = np.asarray(open_zarr(tmp_path / "p-objects.zarr"))
    pairs = set(zip(blocks.ravel().tolist(), objects.ravel().tolist()))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})  # 1:1

    before = tree(tmp_path)
    proc = run("predict", trained, files / "image.tif", "--out", tmp_path / "q.tif",
               "--instances", "nuclei")
    assert proc.returncode == 2 and "'nuclei' is not a class" in proc.stderr
    assert tree(tmp_path) == before


def test_a_batch_left_half_done_says_what_to_do(trained, files, tmp_path):
    """An image whose labels are there but not its objects (a run stopped between them) is
    reported with what to do, the others go on; --overwrite predicts it again."""
    out = tmp_path / "o"
    assert run("predict", trained, files / "image.tif", "--out-dir", out).returncode == 0
    proc = run("predict", trained, files / "image.tif", "--out-dir", out, "--instances", "2")
    assert proc.returncode == 1
    assert "image.tif exists but image-objects.tif does not" in proc.stdout
    assert "--overwrite" in proc.stdout and not (out / "image-objects.tif").exists()
    proc = run("predict", trained, files / "image.tif", "--out-dir", out, "--instances", "2",
               "--overwrite")
    assert proc.returncode == 0 and (out / "image-objects.tif").exists()
