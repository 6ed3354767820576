"""An output path never destroys a user's data: not an input, not a folder voxseg did not
write, not an existing file unless asked (the rule in core/outputs.py, through the command
line, the Python API and the widget's Save)."""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import TINY, run_cli, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_voxseg.cli import main
from napari_voxseg.core import (
    TrainConfig,
    VoxSegError,
    load_model,
    read_volume,
    save_model,
    train,
    write_volume,
)
from napari_voxseg.core.blocks import open_zarr, predict_blocks
from napari_voxseg.core.outputs import check_output, is_or_inside


@pytest.fixture(scope="module")
def tiny_model(small_volume):
    image, _, strokes = small_volume
    return train(image, strokes, TrainConfig(**TINY)).model


@pytest.fixture
def project(tmp_path, small_volume, tiny_model):
    """A user's folder: a scan (.tif and a zarr store that zarr wrote), strokes, notes and a
    saved model."""
    image, _, strokes = small_volume
    d = tmp_path / "project"
    d.mkdir()
    write_volume(d / "scan.tif", image, (2.0, 1.0, 1.0))
    zarr.open_array(str(d / "scan.zarr"), mode="w", shape=image.shape, dtype="float32")[:] = image
    write_volume(d / "strokes.tif", strokes)
    (d / "notes.txt").write_text("a day of work")
    save_model(tiny_model, d / "model")
    return d


# ---- the command line: each row of the table -------------------------------------
def _refused(proc, fragment):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert "Traceback" not in proc.stderr


def test_train_into_a_users_folder_is_refused(project, tmp_path):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "raw.tif").write_bytes(b"raw data")
    before = tree(tmp_path)
    for out, cwd in ((mine, None), (".", mine), (".", project)):
        proc = run_cli("train", project / "scan.tif", project / "strokes.tif", "--out", out,
                       "--iterations", 2, "--patch-size", "8,16,16", cwd=cwd)
        _refused(proc, "choose a new")
        proc = run_cli("train", project / "scan.tif", project / "strokes.tif", "--out", out,
                       "--iterations", 2, "--patch-size", "8,16,16", "--overwrite", cwd=cwd)
        _refused(proc, "choose a new")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("image, flag, out, fragment", [
    ("scan.zarr", "--out", "scan.zarr", "is the input"),
    ("scan.tif", "--out", "strokes.tif", "--overwrite"),
    ("scan.tif", "--out", "scan.tif", "is the input"),
    ("scan.tif", "--probabilities", "scan.tif", "is the input"),
    ("scan.tif", "--uncertainty", "model/config.json", "lies inside the input"),
    ("scan.zarr", "--out", "scan.zarr/labels.zarr", "lies inside the input"),
    ("scan.tif", "--probabilities", "p.tif", "two outputs"),
])
def test_predict_over_an_input_is_refused(project, image, flag, out, fragment):
    before = tree(project)
    args = ["predict", project / "model", project / image]
    extra = [flag, project / out] if flag != "--out" else []
    target = project / (out if flag == "--out" else "p.tif")
    proc = run_cli(*args, "--out", target, *extra)
    _refused(proc, fragment)
    if fragment != "--overwrite":  # an input stays safe even when replacing is allowed
        _refused(run_cli(*args, "--out", target, *extra, "--overwrite"), fragment)
    assert tree(project) == before


def test_our_own_outputs_are_replaced_with_overwrite(project, tmp_path):
    scan, strokes = project / "scan.tif", project / "strokes.tif"
    model = tmp_path / "model"
    base = ["train", scan, strokes, "--out", model, "--iterations", 2, "--patch-size",
            "8,16,16"]
    assert run_cli(*base).returncode == 0
    first = (model / "model.safetensors").read_bytes()
    _refused(run_cli(*base), "--overwrite")
    assert (model / "model.safetensors").read_bytes() == first
    assert run_cli(*base, "--seed", 1, "--overwrite").returncode == 0
    assert (model / "model.safetensors").read_bytes() != first
    for out in (tmp_path / "p.tif", tmp_path / "p.zarr"):
        proc = run_cli("predict", model, scan, "--out", out)
        assert proc.returncode == 0, proc.stderr
        _refused(run_cli("predict", model, scan, "--out", out), "--overwrite")
        proc = run_cli("predict", model, scan, "--out", out, "--overwrite")
        assert proc.returncode == 0, proc.stderr
    assert open_zarr(tmp_path / "p.zarr").shape == read_volume(scan)[0].shape
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


# ---- the Python API ---------------------------------------------------------------------
def test_python_api_follows_the_same_rules(project, tiny_model, small_volume):
    image = small_volume[0]
    before = tree(project)
    with pytest.raises(VoxSegError, match="not a voxseg model"):
        save_model(tiny_model, project, overwrite=True)
    with pytest.raises(VoxSegError, match="--overwrite"):
        save_model(tiny_model, project / "model")
    with pytest.raises(VoxSegError, match="exists"):
        write_volume(project / "strokes.tif", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(VoxSegError, match="not a zarr store that voxseg wrote"):
        write_volume(project / "scan.zarr", np.zeros((2, 2, 2), np.uint8), overwrite=True)
    with pytest.raises(VoxSegError, match="is the input"):
        predict_blocks(tiny_model, project / "scan.zarr", project / "scan.zarr",
                       overwrite=True)
    with pytest.raises(VoxSegError, match="is the input"):  # a zarr array opened from there
        predict_blocks(tiny_model, open_zarr(project / "scan.zarr"), project / "scan.zarr")
    with pytest.raises(VoxSegError, match="not a zarr store that voxseg wrote"):
        predict_blocks(tiny_model, image, project / "scan.zarr", overwrite=True)
    assert tree(project) == before
    # our own: replaced when asked
    save_model(tiny_model, project / "model", overwrite=True)
    write_volume(project / "strokes.tif", np.zeros((2, 2, 2), np.uint8), overwrite=True)
    predict_blocks(tiny_model, image, project / "p.zarr")
    predict_blocks(tiny_model, image, project / "p.zarr", overwrite=True)
    write_volume(project / "v.zarr", image)
    write_volume(project / "v.zarr", image, overwrite=True)
    assert load_model(project / "model").config == json.loads(json.dumps(tiny_model.config))
    # an empty folder is not data: a model may go there
    (project / "empty").mkdir()
    save_model(tiny_model, project / "empty")


def test_a_model_folder_with_a_users_file_in_it_is_not_replaced(project, tiny_model):
    (project / "model" / "readme.txt").write_text("my notes about this model")
    with pytest.raises(VoxSegError, match="not a voxseg model"):
        save_model(tiny_model, project / "model", overwrite=True)
    assert (project / "model" / "readme.txt").read_text() == "my notes about this model"


def test_case_and_hard_links_are_seen(project):
    os.link(project / "scan.tif", project / "scan-link.tif")
    assert is_or_inside(project / "scan-link.tif", project / "scan.tif")
    assert is_or_inside(project / "x" / ".." / "scan.tif", project / "scan.tif")
    assert not is_or_inside(project / "scan2.tif", project / "scan.tif")
    upper = project / "SCAN.TIF"
    if upper.exists():  # a case-insensitive file system: the same file
        with pytest.raises(VoxSegError, match="is the input"):
            check_output(upper, inputs=[project / "scan.tif"], overwrite=True)


# ---- random output/input pairs --------------------------------------------------------------
RELATIONS = ["same", "dotdot", "symlink", "hardlink", "inside", "parent", "fresh"]
ROLES = ["--out", "--probabilities", "--uncertainty", "train --out"]


def _layout(root: Path, image, strokes, model) -> Path:
    """The user's inputs, in a folder whose name could be a zarr output's."""
    d = root / "data.zarr"
    d.mkdir()
    write_volume(d / "scan.tif", image)
    zarr.open_array(str(d / "scan.zarr"), mode="w", shape=image.shape, dtype="float32")[:] = image
    write_volume(d / "strokes.tif", strokes)
    save_model(model, d / "model")
    (root / "sub").mkdir()
    (root / "links").mkdir()
    return d


def _output(root: Path, data: Path, relation: str, target: Path, suffix: str) -> Path:
    if relation == "same":
        return target
    if relation == "dotdot":
        return root / "sub" / ".." / data.name / target.name
    if relation == "symlink":
        link = root / "links" / f"link{target.suffix}"
        link.symlink_to(target, target_is_directory=target.is_dir())
        return link
    if relation == "hardlink" and target.is_file():
        os.link(target, root / "links" / f"hard{target.suffix}")
        return root / "links" / f"hard{target.suffix}"
    if relation in ("inside", "hardlink"):
        return target / f"out{suffix}" if target.is_dir() else target
    if relation == "parent":
        return data
    return root / f"fresh{suffix}"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(relation=st.sampled_from(RELATIONS), role=st.sampled_from(ROLES),
       which=st.sampled_from(["image", "zarr image", "strokes", "model"]),
       overwrite=st.booleans(), suffix=st.sampled_from([".tif", ".npy", ".zarr"]))
def test_no_output_ever_changes_an_input(small_volume, tiny_model, capsys, relation, role,
                                         which, overwrite, suffix):
    image, _, strokes = small_volume
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = _layout(root, image, strokes, tiny_model)
        training = role.startswith("train")
        if which == "strokes" and not training:
            which = "image"  # predict reads no strokes
        scan = data / ("scan.zarr" if which == "zarr image" and not training else "scan.tif")
        if scan.suffix == ".zarr":
            suffix = ".zarr"  # a zarr image is predicted block-wise, into zarr stores
        target = {"image": scan, "zarr image": scan, "strokes": data / "strokes.tif",
                  "model": data / "model"}[which]
        out = _output(root, data, relation, target, "" if training else suffix)
        if training:
            args = ["train", scan, data / "strokes.tif", "--out", out, "--init", data / "model",
                    "--iterations", "1"]
        else:
            fresh = root / f"labels{suffix}"
            args = ["predict", data / "model", scan, *(["--out", out] if role == "--out" else
                                                       ["--out", fresh, role, out])]
        before = tree(data)
        code = main([str(a) for a in args] + (["--overwrite"] if overwrite else []))
        err = capsys.readouterr().err
        assert tree(data) == before, (relation, role, which, err)
        if relation == "fresh":
            assert code == 0, err
        else:
            assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
        shutil.rmtree(root / "links")


# ---- the widget's Save --------------------------------------------------------------------
def test_widget_save_never_replaces_a_users_folder(sample_widget, messages, monkeypatch,
                                                   tmp_path, tiny_model):
    from qtpy.QtWidgets import QFileDialog, QMessageBox

    viewer, widget = sample_widget
    widget.model = tiny_model
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "raw.tif").write_bytes(b"raw data")
    asked = []
    answer = [QMessageBox.StandardButton.No]

    def question(*args, **kwargs):
        asked.append(args[2])
        return answer[0]

    monkeypatch.setattr(QMessageBox, "question", question)
    chosen = [str(mine)]
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (chosen[0], ""))
    widget.save_button.native.click()
    assert "not a voxseg model" in messages[-1] and not asked
    assert tree(mine) == {"raw.tif": hashlib.sha256(b"raw data").hexdigest()}

    chosen[0] = str(tmp_path / "model")
    widget.save_button.native.click()  # a new name: saved, nothing asked
    assert (tmp_path / "model" / "config.json").is_file() and not asked
    first = tree(tmp_path / "model")
    widget.model = train(*_strokes_of(viewer), TrainConfig(**TINY, seed=3)).model
    widget.save_button.native.click()  # our model: asked, "No" keeps it
    assert len(asked) == 1 and "holds a voxseg model" in asked[0]
    assert tree(tmp_path / "model") == first
    answer[0] = QMessageBox.StandardButton.Yes
    widget.save_button.native.click()  # "Yes" replaces it
    assert tree(tmp_path / "model") != first
    assert load_model(tmp_path / "model").config["training"]["seed"] == 3


def _strokes_of(viewer):
    return (viewer.layers["voxseg sample"].data, viewer.layers["voxseg sample strokes"].data)
