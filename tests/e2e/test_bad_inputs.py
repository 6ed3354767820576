"""The bad-input battery: every input a user can get wrong, through the command line (exit 2,
one line, no traceback, no output file) and through the widget (a notification, no layer
changed). The checks themselves live in one place, the core (data, targets, losses, train,
checkpoint, files, blocks), so both see the same messages."""

import numpy as np
import pytest
import zarr
from helpers import run_cli, run_main, snapshot, tree

from napari_voxseg._qt.widget import VoxSegWidget
from napari_voxseg.core import TrainConfig, read_volume, save_model, train, write_volume

SAMPLE = "voxseg sample"


# ---- command line ---------------------------------------------------------------------------
def _bad_inputs(d, model):
    """(name, arguments, fragment of the message, output that must not appear)."""
    write_volume(d / "small.tif", np.ones((4, 8, 8), np.uint8))
    write_volume(d / "nan.npy", np.full((16, 32, 32), np.nan, np.float32))
    write_volume(d / "flat.npy", np.zeros((32, 32), np.float32))
    np.save(d / "no_slices.npy", np.zeros((0, 32, 32), np.float32))
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

    zarr.open_array(str(d / "image.zarr"), mode="w", shape=(16, 32, 32), dtype="float32")[:] = 1
    image, _ = read_volume(d / "image.tif")
    write_volume(d / "two_channels.tif", np.stack([image, image]))
    if not (d / "reg_model").exists():
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
        ("zero-size axis", ["train", d / "no_slices.npy", strokes, "--out", out], "empty", out),
        ("huge patch", ["train", img, strokes, "--out", out, "--patch-size", "512,512,512"],
         "too large", out),
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
        ("unknown network", ["train", img, strokes, "--out", out, "--network", "4d"],
         "invalid choice", out),
        ("patch not a multiple", ["train", img, strokes, "--out", out, "--patch-size",
                                  "16,30,30"], "multiples of", out),
        ("channel axis of a 3D image", ["train", img, strokes, "--out", out,
                                        "--channel-axis", "0"], "--channel-axis", out),
        ("wrong channel count for the model", ["predict", model, d / "two_channels.tif",
                                               "--out", d / "p.tif"], "channel(s)",
         d / "p.tif"),
        ("resample block-wise", ["predict", model, d / "image.zarr", "--out", d / "p.zarr",
                                 "--resample"], "--resample", d / "p.zarr"),
        ("time axis of a 3D image", ["predict", model, img, "--out", d / "p.tif",
                                     "--time-axis", "5"], "--time-axis", d / "p.tif"),
        ("time series into zarr", ["predict", model, img, "--out", d / "p.zarr",
                                   "--time-axis", "0"], "not .zarr", d / "p.zarr"),
        ("fine-tune with more classes", ["train", img, d / "three_classes.npy", "--out", out,
                                         "--init", model], "classes", out),
    ]


# Cases that start a dask cluster client run in a process of their own.
_OWN_PROCESS = ("scheduler without zarr", "unreachable scheduler", "no command")


def test_bad_input_gives_one_line_and_exit_2(files, trained):
    for name, args, fragment, output in _bad_inputs(files, trained):
        # One Python each for a few (what a shell does); the rest through main() in this
        # process, which is the same code without a torch import per case (minutes in all).
        proc = run_cli(*args) if name in _OWN_PROCESS else run_main(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (name, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr)
        assert fragment in lines[0], (name, lines[0])
        assert "Traceback" not in proc.stderr + proc.stdout, name
        if output is not None:
            assert not output.exists(), name
    # No temporary file was left behind either.
    assert not [p for p in files.iterdir() if p.name.startswith(".")]


# ---- widget ---------------------------------------------------------------------------------
@pytest.fixture
def form(make_napari_viewer, tmp_path, sample):
    """The sample in a viewer with the widget, and bad layers and model folders to choose."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-voxseg", "cells")
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    shape = viewer.layers[SAMPLE].data.shape
    image = viewer.layers[SAMPLE].data
    with_nan = image.copy()
    with_nan[0, 0, 0] = np.nan
    with_inf = image.copy()
    with_inf[1, 1, 1] = np.inf
    viewer.add_image(with_nan, name="with nan")
    viewer.add_image(with_inf, name="with inf")
    viewer.add_image(image[0], name="flat")
    viewer.add_image(np.ones((4, 4, 4), np.float32), name="small target")
    viewer.add_image(np.zeros((20, *shape), np.float32), name="20 channels")
    viewer.add_image(np.stack([image, image]), name="2 channels")
    viewer.add_labels(np.ones((4, 4, 4), np.uint8), name="other shape")
    viewer.add_labels(np.zeros(shape, np.uint8), name="empty")
    one = np.zeros(shape, np.uint8)
    one[5, 5, 5:9] = 2
    viewer.add_labels(one, name="one class")
    big = viewer.layers[f"{SAMPLE} strokes"].data.astype(np.int32)
    big[5, 5, 5] = 300
    viewer.add_labels(big, name="class 300")
    three = np.zeros(shape, np.uint8)
    three[5, 5, 5:9] = 3
    viewer.add_labels(three, name="threes")
    nan_target = np.ones(shape, np.float32)
    nan_target[0] = np.nan
    viewer.add_image(nan_target, name="nan target")
    top = np.zeros(shape, np.uint8)
    top[:2] = 1  # covers the NaN slice
    viewer.add_labels(top, name="top")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("[]")
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "model.pt").write_bytes(b"\x80\x04K.")
    tiny = dict(iterations=2, patch_size=(8, 16, 16), depth=2, base_channels=4)
    save_model(train(sample.image, sample.image * 2,
                     TrainConfig(**tiny, task="regression")).model, tmp_path / "regression")
    save_model(train(sample.image, sample.strokes, TrainConfig(**tiny)).model,
               tmp_path / "three classes")
    return viewer, widget, tmp_path


def _widget_cases(widget, d):
    """(name, form settings, action, fragment of the message)."""
    load = widget.load_model
    return [
        ("labels shape", dict(labels="other shape"), widget.train, "shape"),
        ("no strokes", dict(labels="empty"), widget.train, "no strokes"),
        ("one class", dict(labels="one class"), widget.train, "only one class"),
        ("class id 300", dict(labels="class 300"), widget.train, "255"),
        ("class above the count", dict(classes=2), widget.train, "class count"),
        ("NaN image", dict(image="with nan"), widget.train, "NaN"),
        ("inf image", dict(image="with inf"), widget.train, "infinite"),
        ("2D image", dict(image="flat"), widget.train, "2D"),
        ("regression target shape", dict(task="regression", target="small target"),
         widget.train, "shape"),
        ("20 channels first", dict(image="20 channels"), widget.train, "channels"),
        ("weights count", dict(weights="1,2"), widget.train, "class weight"),
        ("negative weights", dict(weights="1,-2,1"), widget.train, ">= 0"),
        ("text weights", dict(weights="heavy"), widget.train, "not numbers"),
        ("text learning rate", dict(lr="fast"), widget.train, "not a number"),
        ("learning rate 5", dict(lr="5"), widget.train, "learning rate"),
        ("predict without model", {}, widget.predict, "no model"),
        ("fine-tune without model", {}, widget.fine_tune, "no model to fine-tune"),
        ("continue with nothing", {}, widget.continue_training, "nothing to continue"),
        ("missing model", {}, lambda: load(d / "none"), "does not exist"),
        ("corrupt model", {}, lambda: load(d / "broken"), "not a"),
        ("pickle instead of safetensors", {}, lambda: load(d / "pickled"), "safetensors"),
        ("multi-label value 3", dict(task="multilabel", multi=["threes"]), widget.train,
         "value 3"),
        ("multi-label, no layers", dict(task="multilabel", multi=[]), widget.train,
         "no annotation layers"),
        ("regression NaN, no mask", dict(task="regression", target="nan target"),
         widget.train, "no mask"),
        ("regression NaN in the mask", dict(task="regression", target="nan target",
                                            mask="top"), widget.train, "inside the mask"),
        ("fine-tune another task", dict(model="regression"), widget.fine_tune, "regression"),
        ("wrong channel count", dict(model="three classes", image="2 channels"),
         widget.predict, "channel"),
    ]


def test_bad_input_through_the_widget(form, messages, qtbot):
    viewer, widget, d = form
    cases = _widget_cases(widget, d)
    assert len(cases) >= 25
    for name, settings, action, fragment in cases:
        widget.model = None
        if "model" in settings:
            assert widget.load_model(d / settings["model"]) is not None, name
        widget.task.value = settings.get("task", "multiclass")
        widget.image_choice.value = viewer.layers[settings.get("image", SAMPLE)]
        widget.labels_choice.value = viewer.layers[settings.get("labels", f"{SAMPLE} strokes")]
        widget.multi_labels.value = [viewer.layers[n] for n in settings.get("multi", [])]
        if "target" in settings:
            widget.target_choice.value = viewer.layers[settings["target"]]
            widget.mask_choice.value = viewer.layers[settings["mask"]] if "mask" in settings \
                else "everywhere"
        widget.weights.value = settings.get("weights", "none")
        widget.learning_rate.value = settings.get("lr", "0.003")
        widget.classes.value = settings.get("classes", 0)
        before = snapshot(viewer)
        messages.clear()
        action()
        # What needs a voxel read (NaN in the image, say) is checked by the worker as it
        # starts, so that Train never reads a whole volume on the main thread: a moment later.
        qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
        assert messages and fragment in messages[-1], (name, messages)
        after = snapshot(viewer)
        assert before.keys() == after.keys(), name
        for key in before:
            np.testing.assert_array_equal(before[key], after[key], err_msg=name)


# ---- outputs that would destroy data ----------------------------------------------------
def _output_cases(d, model, mine):
    """(name, arguments, working folder, fragment of the message): outputs over the user's
    inputs or folders, refused with or without --overwrite."""
    img, strokes, scan = d / "image.tif", d / "strokes.tif", mine / "scan.zarr"
    fit = ["--iterations", "2", "--patch-size", "8,16,16"]
    return [
        ("model into a user's folder", ["train", img, strokes, "--out", mine, *fit], None,
         "not a voxseg model"),
        ("model into the current folder", ["train", img, strokes, "--out", ".", *fit], mine,
         "not a voxseg model"),
        ("model over the image", ["train", img, strokes, "--out", img, *fit], None,
         "is the input"),
        ("model over the model it fine-tunes", ["train", img, strokes, "--out", model,
                                                "--init", model, *fit], None, "is the input"),
        ("prediction over the zarr image", ["predict", model, scan, "--out", scan], None,
         "is the input"),
        ("prediction over the image", ["predict", model, img, "--out", img], None,
         "is the input"),
        ("probabilities over the image", ["predict", model, img, "--out", mine / "p.tif",
                                          "--probabilities", img], None, "is the input"),
        ("prediction into the model", ["predict", model, img, "--out", model / "p.tif"], None,
         "lies inside the input"),
        ("prediction into the zarr image", ["predict", model, scan, "--out",
                                            scan / "p.zarr"], None, "lies inside the input"),
        ("prediction over a zarr store voxseg did not write",
         ["predict", model, img, "--out", mine / "other.zarr"], None, "that voxseg wrote"),
    ]


def test_outputs_over_inputs_are_refused(files, trained, tmp_path):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "raw.tif").write_bytes(b"a day of work")
    for name in ("scan.zarr", "other.zarr"):
        zarr.open_array(str(mine / name), mode="w", shape=(16, 32, 32), dtype="float32")[:] = 1
    before = (tree(files), tree(mine))
    cases = _output_cases(files, trained, mine)
    for name, args, cwd, fragment in cases:
        for extra in ([], ["--overwrite"]):
            proc = run_cli(*args, *extra, cwd=cwd)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2, (name, extra, proc.stderr)
            assert len(lines) == 1 and fragment in lines[0], (name, lines)
            assert "Traceback" not in proc.stderr, name
    assert (tree(files), tree(mine)) == before
    # Without --overwrite an existing file is refused too: the strokes are not an input of
    # predict, but they are the user's.
    proc = run_cli("predict", trained, files / "image.tif", "--out", files / "strokes.tif")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert tree(files) == before[0]
