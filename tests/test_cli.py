"""The command line: the train -> predict -> evaluate round trip, and every bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_voxseg.core import load_model, predict, read_volume, write_volume


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "napari_voxseg", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_volume):
    image, truth, strokes = small_volume
    d = tmp_path_factory.mktemp("cli")
    write_volume(d / "image.tif", image, (2.0, 1.0, 1.0))
    write_volume(d / "strokes.tif", strokes, (2.0, 1.0, 1.0))
    write_volume(d / "truth.npy", truth)
    return d


@pytest.fixture(scope="module")
def trained(files):
    proc = run("train", files / "image.tif", files / "strokes.tif", "--out", files / "model",
               "--iterations", 60, "--patch-size", "16,32,32", "--class-weights", "auto")
    assert proc.returncode == 0, proc.stderr
    return files / "model"


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
    text = run("evaluate", files / "pred.tif", files / "truth.npy").stdout
    assert "dice" in text and "mean" in text


def test_training_shows_a_progress_bar(files, tmp_path):
    proc = run("train", files / "image.tif", files / "strokes.tif", "--out", tmp_path / "m",
               "--iterations", 3, "--patch-size", "16,32,32")
    assert proc.returncode == 0 and "train [" in proc.stderr and "3/3" in proc.stderr


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
    assert "predict (blocks)" in proc.stderr and "4/4" in proc.stderr
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


def _bad_inputs(d, model):
    """(name, arguments, fragment of the message, output that must not appear)."""
    write_volume(d / "small.tif", np.ones((4, 8, 8), np.uint8))
    write_volume(d / "nan.npy", np.full((16, 32, 32), np.nan, np.float32))
    write_volume(d / "flat.npy", np.zeros((32, 32), np.float32))
    write_volume(d / "empty_strokes.npy", np.zeros((16, 32, 32), np.uint8))
    write_volume(d / "one_class.npy", np.ones((16, 32, 32), np.uint8))
    write_volume(d / "float_strokes.npy", np.ones((16, 32, 32), np.float32))
    (d / "truncated.tif").write_bytes((d / "image.tif").read_bytes()[:200])
    (d / "broken_model").mkdir(exist_ok=True)
    (d / "broken_model" / "config.json").write_text("{")
    (d / "broken_model" / "model.safetensors").write_bytes(b"")
    target = np.ones((16, 32, 32), np.float32)
    target[0] = np.nan
    write_volume(d / "nan_target.npy", target)
    known = np.zeros((16, 32, 32), np.uint8)
    known[:4] = 1  # covers the NaN slice
    write_volume(d / "known.npy", known)
    write_volume(d / "ml_bad.npy", np.full((16, 32, 32), 3, np.uint8))
    three = np.zeros((16, 32, 32), np.uint8)
    three[5, 2:30, 3], three[5, 10:20, 10], three[9, 10:20, 12] = 1, 2, 3
    write_volume(d / "three_classes.npy", three)
    import zarr

    zarr.open_array(str(d / "image.zarr"), mode="w", shape=(16, 32, 32), dtype="float32")[:] = 1
    if not (d / "reg_model").exists():
        from napari_voxseg.core import TrainConfig, save_model, train

        image, _ = read_volume(d / "image.tif")
        reg = train(image, image * 2, TrainConfig(iterations=2, task="regression",
                                                  patch_size=(8, 16, 16), depth=2,
                                                  base_channels=4)).model
        save_model(reg, d / "reg_model")
    out = d / "out_model"
    img, strokes = d / "image.tif", d / "strokes.tif"
    reg = ["--task", "regression"]
    return [
        ("BCE on multi-class", ["train", img, strokes, "--out", out, "--loss", "bce"],
         "for multilabel tasks", out),
        ("Dice+CE on regression", ["train", img, d / "nan_target.npy", "--out", out, *reg,
                                   "--loss", "dice_ce"], "for multiclass tasks", out),
        ("regression NaN, no mask", ["train", img, d / "nan_target.npy", "--out", out, *reg],
         "no mask", out),
        ("regression NaN inside mask", ["train", img, d / "nan_target.npy", "--out", out, *reg,
                                        "--mask", d / "known.npy"], "inside the mask", out),
        ("regression weights", ["train", img, d / "nan_target.npy", "--out", out, *reg,
                                "--class-weights", "auto"], "regression", out),
        ("multi-label values", ["train", img, d / "ml_bad.npy", d / "ml_bad.npy", "--out", out,
                                "--task", "multilabel"], "value 3", out),
        ("two label files, multi-class", ["train", img, strokes, strokes, "--out", out],
         "--task multilabel", out),
        ("mask for multi-class", ["train", img, strokes, "--out", out, "--mask",
                                  d / "known.npy"], "regression", out),
        ("negative focal gamma", ["train", img, strokes, "--out", out, "--loss", "focal",
                                  "--focal-gamma", "-1"], "focal gamma", out),
        ("boundary source without boundary_ce", ["train", img, strokes, "--out", out,
                                                 "--boundary-from", strokes], "boundary_ce",
         out),
        ("labels shape", ["train", img, d / "small.tif", "--out", out], "shape", out),
        ("no strokes", ["train", img, d / "empty_strokes.npy", "--out", out], "no strokes", out),
        ("one class", ["train", img, d / "one_class.npy", "--out", out], "one class", out),
        ("NaN image", ["train", d / "nan.npy", strokes, "--out", out], "NaN", out),
        ("2D image", ["train", d / "flat.npy", strokes, "--out", out], "2D", out),
        ("float labels", ["train", img, d / "float_strokes.npy", "--out", out], "integers", out),
        ("weights count", ["train", img, strokes, "--out", out, "--class-weights", "1,2,3"],
         "class weight", out),
        ("negative weights", ["train", img, strokes, "--out", out, "--class-weights", "1,-1"],
         ">= 0", out),
        ("missing file", ["train", d / "nope.tif", strokes, "--out", out], "does not exist", out),
        ("truncated file", ["train", d / "truncated.tif", strokes, "--out", out],
         "not a readable", out),
        ("unknown device", ["train", img, strokes, "--out", out, "--device", "tpu"],
         "invalid choice", out),
        ("unknown loss", ["train", img, strokes, "--out", out, "--loss", "hinge"],
         "invalid choice", out),
        ("missing model", ["predict", d / "no_model", img, "--out", d / "p.tif"],
         "does not exist", d / "p.tif"),
        ("corrupt model", ["predict", d / "broken_model", img, "--out", d / "p.tif"],
         "not readable JSON", d / "p.tif"),
        ("wrong format out", ["predict", model, img, "--out", d / "p.png"], "cannot write",
         d / "p.png"),
        ("evaluate shapes", ["evaluate", d / "small.tif", d / "truth.npy"], "shape", None),
        ("evaluate floats", ["evaluate", d / "nan.npy", d / "truth.npy"], "integer", None),
        ("no command", [], "required", None),
        ("zarr image, tif output", ["predict", model, d / "image.zarr", "--out", d / "p.tif"],
         "zarr store", d / "p.tif"),
        ("scheduler without zarr", ["predict", model, img, "--out", d / "p.tif", "--scheduler",
                                    "tcp://127.0.0.1:1"], "block-wise", d / "p.tif"),
        ("unreachable scheduler", ["predict", model, img, "--out", d / "p.zarr", "--scheduler",
                                   "tcp://127.0.0.1:1"], "cannot reach", d / "p.zarr"),
        ("uncertainty of regression", ["predict", d / "reg_model", img, "--out", d / "p.tif",
                                       "--uncertainty", d / "u.tif"], "not probabilities",
         d / "p.tif"),
        ("bad block", ["predict", model, img, "--out", d / "p.zarr", "--block", "8,0,8"],
         "positive", d / "p.zarr"),
        ("fine-tune a missing model", ["train", img, strokes, "--out", out, "--init",
                                       d / "no_model"], "does not exist", out),
        ("fine-tune with another task", ["train", img, d / "nan_target.npy", "--out", out,
                                         "--init", model, *reg], "regression", out),
        ("fine-tune with more classes", ["train", img, d / "three_classes.npy", "--out", out,
                                         "--init", model], "classes", out),
    ]


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


def test_bad_input_gives_one_line_and_exit_2(files, trained):
    for name, args, fragment, output in _bad_inputs(files, trained):
        proc = run(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (name, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr)
        assert fragment in lines[0], (name, lines[0])
        assert "Traceback" not in proc.stderr + proc.stdout, name
        if output is not None:
            assert not output.exists(), name
    # No temporary file was left behind either.
    assert not [p for p in files.iterdir() if p.name.startswith(".")]
