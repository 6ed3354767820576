"""The command line: train -> predict -> evaluate round trips (bad input: test_bad_inputs)."""

import json

import numpy as np
import pytest
from helpers import run_cli as run

from napari_voxseg.core import load_model, predict, read_volume, write_volume


def test_round_trip(files, trained):
    model = load_model(trained)
    assert model.config["voxel_size"] == [2.0, 1.0, 1.0]
    assert model.config["training"]["class_weights"] is not None

    proc = run("predict", trained, files / "image.tif", "--out", files / "pred.tif",
               "--probabilities", files / "prob.npy")
    assert proc.returncode == 0, proc.stderr
    pred, voxel = read_volume(files / "pred.tif")
    image, _ = read_volume(files / "image.tif")
    assert pred.shape == image.shape and voxel == pytest.approx((2.0, 1.0, 1.0))
    np.testing.assert_array_equal(pred, predict(model, image))  # same as the Python API
    prob, _ = read_volume(files / "prob.npy")
    assert prob.shape == (2, *image.shape)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-4)

    proc = run("evaluate", files / "pred.tif", files / "truth.npy", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report["dice"]) == {"1", "2"} and report["dice"]["2"] > 0.8
    row = report["classes"]["2"]
    assert set(row) == {"dice", "iou", "precision", "recall", "hd95", "assd", "note"}
    assert 0 <= row["hd95"] < 10 and 0 <= row["assd"] <= row["hd95"] + 1e-6
    text = run("evaluate", files / "pred.tif", files / "truth.npy").stdout
    assert "dice" in text and "mean" in text and "hd95" in text
    proc = run("evaluate", files / "pred.tif", files / "truth.npy", "--instances", "--json")
    objects = json.loads(proc.stdout)["objects"]
    assert objects["true"] == 2 and 0 <= objects["f1"] <= 1


def test_training_shows_a_progress_bar_on_a_terminal_only(files, tmp_path):
    """tqdm's bar on a terminal (a pseudo-terminal here); none in a pipe or with -q; -v says
    the settings; -q keeps the output to warnings and errors."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    args = ["train", files / "image.tif", files / "strokes.tif", "--iterations", 3,
            "--patch-size", "16,32,32"]
    proc = run(*args, "--out", tmp_path / "m")
    assert proc.returncode == 0 and "3/3" not in proc.stderr  # a pipe: no bar
    assert "saved model to" in proc.stdout
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with subprocess.Popen([sys.executable, "-m", "napari_voxseg", *map(str, args), "--out",
                           tmp_path / "t"], stdout=subprocess.PIPE, stderr=follower) as child:
        os.close(follower)
        screen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        child.wait()
    os.close(leader)
    assert child.returncode == 0 and b"train:" in screen and b"3/3" in screen
    quiet = run(*args, "--out", tmp_path / "q", "-q")
    assert quiet.returncode == 0 and quiet.stdout == "" and "kept" not in quiet.stderr
    loud = run("-v", *args, "--out", tmp_path / "v")
    assert "settings: {" in loud.stdout and "device cpu" in loud.stdout


def test_predict_uncertainty_and_zarr_block_wise(files, trained, tmp_path):
    import zarr

    from napari_voxseg.core.blocks import open_zarr
    from napari_voxseg.core.infer import iter_predict, run_to_end

    image, _ = read_volume(files / "image.tif")
    expected = run_to_end(iter_predict(load_model(trained), image, uncertainty=True))
    proc = run("predict", trained, files / "image.tif", "--out", tmp_path / "p.tif",
               "--uncertainty", tmp_path / "u.npy")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(read_volume(tmp_path / "u.npy")[0], expected.uncertainty,
                               atol=1e-6)

    source = zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=image.shape,
                             chunks=(8, 16, 16), dtype="float32")
    source[:] = image
    proc = run("predict", trained, tmp_path / "image.zarr", "--out", tmp_path / "p.zarr",
               "--uncertainty", tmp_path / "u.zarr", "--block", "8,16,32")
    assert proc.returncode == 0, proc.stderr
    assert "wrote " in proc.stdout and "4/4" not in proc.stderr  # a pipe: no progress bar
    np.testing.assert_array_equal(open_zarr(tmp_path / "p.zarr")[:], expected.labels)
    np.testing.assert_allclose(open_zarr(tmp_path / "u.zarr")[:], expected.uncertainty,
                               atol=1e-6)
    # A .tif image can go into a zarr store too.
    proc = run("predict", trained, files / "image.tif", "--out", tmp_path / "q.zarr")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(open_zarr(tmp_path / "q.zarr")[:], expected.labels)


def test_fine_tune_a_saved_model(files, trained, tmp_path):
    proc = run("train", files / "image.tif", files / "strokes.tif", "--out", tmp_path / "ft",
               "--init", trained, "--iterations", 5)
    assert proc.returncode == 0, proc.stderr
    base, tuned = load_model(trained), load_model(tmp_path / "ft")
    assert tuned.config["architecture"] == base.config["architecture"]
    assert tuned.config["patch_size"] == base.config["patch_size"] == [16, 32, 32]
    assert tuned.config["training"]["steps_done"] == base.config["training"]["steps_done"] + 5
    assert tuned.config["training"]["learning_rate"] == pytest.approx(3e-4)


def test_multilabel_and_regression_tasks(files, small_volume):
    image, truth, strokes = small_volume
    d = files
    # Two overlapping classes, one file each: the box, and the box's upper half.
    box = np.where(strokes == 2, 2, np.where(strokes == 1, 1, 0)).astype(np.uint8)
    upper = box.copy()
    upper[8:][upper[8:] == 2] = 1
    write_volume(d / "box.npy", box)
    write_volume(d / "upper.npy", upper)
    proc = run("train", d / "image.tif", d / "box.npy", d / "upper.npy", "--task", "multilabel",
               "--loss", "dice_bce", "--class-weights", "auto", "--out", d / "ml",
               "--iterations", 40, "--patch-size", "16,32,32")
    assert proc.returncode == 0, proc.stderr
    config = load_model(d / "ml").config
    assert config["task"] == "multilabel" and [c["name"] for c in config["classes"]] == [
        "box", "upper"]
    assert len(config["training"]["class_weights"]) == 2
    proc = run("predict", d / "ml", d / "image.tif", "--out", d / "ml_pred.npy",
               "--probabilities", d / "ml_prob.npy")
    assert proc.returncode == 0, proc.stderr
    pred, _ = read_volume(d / "ml_pred.npy")
    assert pred.shape == (2, *image.shape) and set(np.unique(pred)) <= {1, 2}
    prob, _ = read_volume(d / "ml_prob.npy")
    assert prob.shape == (2, *image.shape) and 0 <= prob.min() and prob.max() <= 1
    write_volume(d / "ml_truth.npy", np.stack([truth, np.where(np.arange(16)[:, None, None] < 8,
                                                                truth, 1)]).astype(np.uint8))
    proc = run("evaluate", d / "ml_pred.npy", d / "ml_truth.npy", "--json")
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)["dice"]) == {"1", "2"}

    # Regression: learn 5 * (inside the box), known on two slices only.
    target = (truth == 2).astype(np.float32) * 5
    known = np.zeros_like(strokes)
    known[[5, 9]] = 1
    write_volume(d / "target.npy", target)
    write_volume(d / "known_slices.npy", known)
    proc = run("train", d / "image.tif", d / "target.npy", "--task", "regression", "--loss",
               "l1", "--mask", d / "known_slices.npy", "--out", d / "reg", "--iterations", 60,
               "--patch-size", "16,32,32")
    assert proc.returncode == 0, proc.stderr
    proc = run("predict", d / "reg", d / "image.tif", "--out", d / "reg_pred.tif")
    assert proc.returncode == 0, proc.stderr
    values, voxel = read_volume(d / "reg_pred.tif")
    assert values.dtype == np.float32 and values.shape == image.shape
    assert voxel == pytest.approx((2.0, 1.0, 1.0))
    proc = run("evaluate", d / "reg_pred.tif", d / "target.npy", "--json")
    errors = json.loads(proc.stdout)
    baseline = np.abs(target - target[known > 0].mean()).mean()
    assert errors["mae"] < 0.5 * baseline, (errors, baseline)
    # A regression model has no probabilities to give.
    proc = run("predict", d / "reg", d / "image.tif", "--out", d / "r2.tif", "--probabilities",
               d / "r2p.tif")
    assert proc.returncode == 2 and "probabilities" in proc.stderr
    assert not (d / "r2.tif").exists() and not (d / "r2p.tif").exists()


def test_train_reads_a_zarr_image(files, tmp_path):
    import zarr

    image, _ = read_volume(files / "image.tif")
    store = zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=image.shape,
                            dtype="float32")
    store[:] = image
    store.attrs["voxel_size"] = [2.0, 1.0, 1.0]
    proc = run("train", tmp_path / "image.zarr", files / "strokes.tif", "--out",
               tmp_path / "m", "--iterations", 2, "--patch-size", "16,32,32")
    assert proc.returncode == 0, proc.stderr
    assert load_model(tmp_path / "m").config["voxel_size"] == [2.0, 1.0, 1.0]


def test_the_console_script_says_its_name_and_version():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import napari_voxseg

    script = shutil.which("voxseg", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the console script is not installed (pip install -e .)")
    proc = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"voxseg {napari_voxseg.__version__}"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert proc.stdout.startswith("usage: voxseg ")
    assert run("--version").stdout.startswith("python -m napari_voxseg ")


def test_help_names_every_format_the_readers_take():
    from napari_voxseg.core.paths import READ_SUFFIXES, WRITE_SUFFIXES

    for command, formats in (("train", READ_SUFFIXES), ("predict", WRITE_SUFFIXES),
                             ("evaluate", READ_SUFFIXES)):
        text = " ".join(run(command, "--help").stdout.split())  # argparse wraps lines
        for suffix in (*formats, ".zarr"):
            assert suffix in text, (command, suffix)
