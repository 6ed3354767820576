"""Volumes as they come: anisotropic voxels, a handful of slices, several channels, a voxel
size other than the model's. Each trains and predicts end to end (real training steps, real
files through the command line, a real viewer)."""

import json

import numpy as np
import pytest
import tifffile
import torch
from helpers import run_cli, wait_done

from napari_voxseg.core import TrainConfig, predict, read_volume, train, write_volume
from napari_voxseg.core.files import read_volume_info
from napari_voxseg.core.infer import iter_predict, run_to_end, voxel_mismatch
from napari_voxseg.core.metrics import dice_per_class
from napari_voxseg.core.models import architecture_from, build_model, plan_pooling
from napari_voxseg.core.synthetic import _blur, make_sample
from napari_voxseg.core.train import plan_config


def _dense_strokes(truth, slices, every=3):
    """Strokes: every ``every``-th voxel of the ground truth on the given slices."""
    strokes = np.zeros_like(truth)
    for z in slices:
        strokes[z, ::every, ::every] = truth[z, ::every, ::every]
    return strokes


# ---- the plan -------------------------------------------------------------------------------
def test_pooling_follows_the_voxel_size():
    assert plan_pooling((1.0, 1.0, 1.0), 3) == (None, None)
    assert plan_pooling((1.5, 1.0, 1.0), 3) == (None, None)  # near isotropic
    strides, kernels = plan_pooling((4.0, 1.0, 1.0), 3)
    # Z is neither convolved across nor pooled until Y and X have caught up (4 -> 2 -> 1).
    assert strides == [[1, 2, 2], [1, 2, 2]]
    assert kernels == [[1, 3, 3], [1, 3, 3], [3, 3, 3]]
    strides, kernels = plan_pooling((2.0, 1.0, 1.0), 4)
    assert strides == [[1, 2, 2], [2, 2, 2], [2, 2, 2]]
    net = build_model(architecture_from(strides=strides, kernels=kernels, depth=4))
    assert net.divisor == (4, 8, 8)
    assert net(torch.zeros(1, 1, 8, 16, 16)).shape == (1, 2, 8, 16, 16)


def test_plan_chooses_the_network_and_patch():
    cfg = TrainConfig().checked()
    iso, _ = plan_config(cfg, (48, 96, 96), (0.5, 0.5, 0.5))
    assert (iso.network, iso.patch_size, iso.batch_size) == ("3d", (32, 48, 48), 2)
    aniso, layout = plan_config(cfg, (40, 200, 200), (4.0, 1.0, 1.0))
    z, y, x = aniso.patch_size
    assert aniso.network == "3d" and layout["strides"][0] == [1, 2, 2]
    assert z < 32 and y > 48 and y % 4 == 0  # flatter and wider, about as many voxels
    assert 0.5 < z * y * x / (32 * 48 * 48) < 2
    thin, layout = plan_config(cfg, (5, 96, 96), None)
    assert (thin.network, layout["name"], thin.patch_size[0]) == ("2d", "unet2d", 1)
    forced, _ = plan_config(TrainConfig(network="3d").checked(), (5, 96, 96), None)
    assert forced.network == "3d" and forced.patch_size[0] == 8  # the stack, rounded up
    asked, _ = plan_config(TrainConfig(network="2d").checked(), (48, 96, 96), None)
    assert asked.network == "2d"


def test_2d_network_never_mixes_slices():
    net = build_model(architecture_from(name="unet2d", base_channels=4, num_classes=3))
    x = torch.randn(2, 1, 3, 16, 16)
    with torch.no_grad():
        whole = net(x)
        alone = net(x[:, :, 1:2])
    assert net.divisor == (1, 4, 4)
    assert torch.allclose(whole[:, :, 1:2], alone, atol=1e-5)
    assert not any(isinstance(m, torch.nn.Conv3d) for m in net.modules())


# ---- end to end, through files and the command line ------------------------------------------
@pytest.fixture(scope="module")
def tall_sample():
    return make_sample(shape=(96, 96, 96))


def test_anisotropic_volume_trains_and_predicts(tmp_path, tall_sample):
    """Voxels 4x longer in Z (every 4th slice of a sample): the planned network pools Y and X
    first, and segments well."""
    s = tall_sample
    image, truth = s.image[::4], s.ground_truth[::4]
    strokes = np.zeros_like(truth)
    for z in range(truth.shape[0]):
        strokes[z] = s.strokes[4 * z: 4 * z + 4].max(axis=0)  # strokes near each slice
    write_volume(tmp_path / "aniso.tif", image, (2.0, 0.5, 0.5))
    write_volume(tmp_path / "strokes.tif", strokes, (2.0, 0.5, 0.5))
    proc = run_cli("train", tmp_path / "aniso.tif", tmp_path / "strokes.tif", "--out",
                   tmp_path / "model", "--iterations", 30)
    assert proc.returncode == 0, proc.stderr
    assert "anisotropic pooling" in proc.stdout
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["voxel_size"] == [2.0, 0.5, 0.5]
    assert config["architecture"]["strides"][0] == [1, 2, 2]
    assert config["architecture"]["kernels"][0] == [1, 3, 3]
    assert config["patch_size"][0] < config["patch_size"][1]
    proc = run_cli("predict", tmp_path / "model", tmp_path / "aniso.tif", "--out",
                   tmp_path / "pred.tif")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # the same voxel size: nothing to say
    pred, voxel = read_volume(tmp_path / "pred.tif")
    assert pred.shape == truth.shape and voxel == (2.0, 0.5, 0.5)
    dice = dice_per_class(pred, truth)
    assert dice[1] > 0.95 and dice[2] > 0.8, dice


def test_five_slice_stack_trains_and_predicts_slice_by_slice(tmp_path, sample):
    # Objects (nuclei and tubes together) against background: what one slice can tell apart
    # (a tube's cross-section looks like a small nucleus).
    image, truth = sample.image[20:25], np.minimum(sample.ground_truth[20:25], 2)
    write_volume(tmp_path / "thin.tif", image, sample.voxel_size)
    write_volume(tmp_path / "strokes.tif", _dense_strokes(truth, (1, 3)))
    proc = run_cli("train", tmp_path / "thin.tif", tmp_path / "strokes.tif", "--out",
                   tmp_path / "model", "--iterations", 30)
    assert proc.returncode == 0, proc.stderr
    assert "2D U-Net, slice by slice" in proc.stdout
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["architecture"]["name"] == "unet2d" and config["patch_size"][0] == 1
    proc = run_cli("predict", tmp_path / "model", tmp_path / "thin.tif", "--out",
                   tmp_path / "pred.npy")
    assert proc.returncode == 0, proc.stderr
    pred = np.load(tmp_path / "pred.npy")
    assert pred.shape == (5, 96, 96)
    dice = dice_per_class(pred, truth)
    assert dice[1] > 0.95 and dice[2] > 0.8, dice
    # Asked for explicitly on a volume that would get the 3D network:
    proc = run_cli("train", tmp_path / "thin.tif", tmp_path / "strokes.tif", "--out",
                   tmp_path / "model3d", "--iterations", 2, "--network", "3d")
    assert proc.returncode == 0 and "3D U-Net" in proc.stdout, proc.stderr


def _two_channel(sample):
    """Nuclei (class 2) seen only in channel 0, tubes (class 3) only in channel 1."""
    rng = np.random.default_rng(3)
    truth = sample.ground_truth
    channels = [_blur((truth == k).astype(np.float32), 1.0)
                + 0.1 * rng.standard_normal(truth.shape).astype(np.float32) for k in (2, 3)]
    return np.stack(channels)


def test_two_channel_image_trains_with_both_channels(tmp_path, sample):
    image = _two_channel(sample)
    # Saved as Z, Y, X, C (as numpy users do): --channel-axis says where the channels are.
    np.save(tmp_path / "two.npy", np.moveaxis(image, 0, -1))
    write_volume(tmp_path / "strokes.tif", sample.strokes)
    proc = run_cli("train", tmp_path / "two.npy", tmp_path / "strokes.tif", "--out",
                   tmp_path / "model", "--iterations", 30, "--channel-axis", 3)
    assert proc.returncode == 0, proc.stderr
    assert "2 channels" in proc.stdout
    proc = run_cli("predict", tmp_path / "model", tmp_path / "two.npy", "--out",
                   tmp_path / "pred.npy", "--channel-axis", -1)
    assert proc.returncode == 0, proc.stderr
    dice = dice_per_class(np.load(tmp_path / "pred.npy"), sample.ground_truth)
    assert dice[2] > 0.7 and dice[3] > 0.7, dice  # each class is in one channel only
    # Both channels are used: blank either one and its class disappears.
    from napari_voxseg.core import load_model

    model = load_model(tmp_path / "model")
    for blank, lost in ((0, 2), (1, 3)):
        dimmed = image.copy()
        dimmed[blank] = np.median(image[blank])
        assert dice_per_class(predict(model, dimmed), sample.ground_truth)[lost] < 0.3
    # A 1-channel image for this model is refused with one line.
    write_volume(tmp_path / "one.tif", image[0])
    proc = run_cli("predict", tmp_path / "model", tmp_path / "one.tif", "--out",
                   tmp_path / "p1.tif")
    assert proc.returncode == 2 and "2 channel(s)" in proc.stderr
    assert not (tmp_path / "p1.tif").exists()


# ---- the voxel size the model remembers -------------------------------------------------------
def test_voxel_size_mismatch_warns_and_resampling_fixes_it(tmp_path, sample):
    # The U-Net alone: it sees voxels as they are (two stages: stage 1's filters also follow
    # the voxel size given, which hides part of the mismatch).
    model = train(sample.image, sample.strokes, TrainConfig(iterations=120, two_stage=False),
                  voxel_size=sample.voxel_size).model
    assert model.config["voxel_size"] == [0.5, 0.5, 0.5]
    coarse = torch.nn.functional.interpolate(torch.from_numpy(sample.image)[None, None],
                                             scale_factor=0.5, mode="trilinear")[0, 0].numpy()
    truth = sample.ground_truth[::2, ::2, ::2]
    assert voxel_mismatch(model, (1.0, 1.0, 1.0))
    assert voxel_mismatch(model, (0.52, 0.5, 0.48)) is None  # within 10%
    plain = dice_per_class(predict(model, coarse), truth)
    result = run_to_end(iter_predict(model, coarse, voxel_size=(1.0, 1.0, 1.0), resample=True,
                                     probabilities=True, uncertainty=True))
    assert result.labels.shape == coarse.shape == result.uncertainty.shape
    assert result.probabilities.shape == (3, *coarse.shape)
    np.testing.assert_allclose(result.probabilities.sum(0), 1, atol=1e-4)
    resampled = dice_per_class(result.labels, truth)
    # At the model's voxel size the objects look as in training: clearly better.
    assert np.mean([resampled[2], resampled[3]]) > np.mean([plain[2], plain[3]]) + 0.03, \
        (plain, resampled)

    from napari_voxseg.core import save_model

    save_model(model, tmp_path / "model")
    write_volume(tmp_path / "coarse.tif", coarse, (1.0, 1.0, 1.0))
    proc = run_cli("predict", tmp_path / "model", tmp_path / "coarse.tif", "--out",
                   tmp_path / "p.tif")
    assert proc.returncode == 0 and "warning: the image's voxel size 1x1x1 differs" in \
        proc.stderr and "--resample" in proc.stderr
    proc = run_cli("predict", tmp_path / "model", tmp_path / "coarse.tif", "--out",
                   tmp_path / "r.tif", "--resample")
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    np.testing.assert_array_equal(read_volume(tmp_path / "r.tif")[0], result.labels)


# ---- files with channels ------------------------------------------------------------------
def test_ome_tiff_channels_and_voxel_size(tmp_path, make_napari_viewer):
    data = np.random.default_rng(0).random((5, 2, 8, 9)).astype(np.float32)  # Z, C, Y, X
    tifffile.imwrite(tmp_path / "cells.ome.tif", data, ome=True, photometric="minisblack",
                     metadata={"axes": "ZCYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.3,
                               "PhysicalSizeZ": 1.5, "Channel": {"Name": ["DAPI", "GFP"]}})
    array, info = read_volume_info(tmp_path / "cells.ome.tif")
    np.testing.assert_array_equal(array, np.moveaxis(data, 1, 0))
    assert info == {"voxel_size": (1.5, 0.3, 0.2), "channel_axis": 0,
                    "channel_names": ["DAPI", "GFP"], "time_axis": None}
    viewer = make_napari_viewer()
    viewer.open(tmp_path / "cells.ome.tif", plugin="napari-voxseg")
    assert [layer.name for layer in viewer.layers] == ["cells DAPI", "cells GFP"]
    for c, layer in enumerate(viewer.layers):
        assert layer.data.shape == (5, 8, 9)
        np.testing.assert_allclose(layer.scale, (1.5, 0.3, 0.2))
        np.testing.assert_array_equal(layer.data, data[:, c])
    # A time series is refused with one line.
    tifffile.imwrite(tmp_path / "movie.ome.tif", np.zeros((3, 4, 8, 9), np.uint8), ome=True,
                     metadata={"axes": "TZYX"})
    proc = run_cli("train", tmp_path / "movie.ome.tif", tmp_path / "movie.ome.tif", "--out",
                   tmp_path / "m")
    assert proc.returncode == 2 and "T=3" in proc.stderr and "Traceback" not in proc.stderr


def test_imagej_channels_open_as_one_layer_each(tmp_path, make_napari_viewer):
    data = np.random.default_rng(1).random((2, 4, 8, 9)).astype(np.float32)  # C, Z, Y, X
    write_volume(tmp_path / "two.tif", data, (2.0, 1.0, 1.0))
    viewer = make_napari_viewer()
    viewer.open(tmp_path / "two.tif", plugin="napari-voxseg")
    assert [layer.name for layer in viewer.layers] == ["two channel 0", "two channel 1"]
    for c, layer in enumerate(viewer.layers):
        np.testing.assert_array_equal(layer.data, data[c])
        np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))


# ---- the widget ---------------------------------------------------------------------------
def test_widget_trains_on_two_image_layers_as_channels(make_napari_viewer, qtbot, sample,
                                                       messages):
    from napari_voxseg._qt.widget import VoxSegWidget

    image = _two_channel(sample)
    viewer = make_napari_viewer()
    nuclei = viewer.add_image(image[0], name="nuclei", scale=sample.voxel_size)
    tubes = viewer.add_image(image[1], name="tubes", scale=sample.voxel_size)
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="other shape")
    strokes = viewer.add_labels(sample.strokes.copy(), name="strokes", scale=sample.voxel_size)
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_choice.value = nuclei
    assert [layer.name for layer in widget.channels.choices] == ["tubes"]  # same shape only
    widget.channels.value = [tubes]
    widget.labels_choice.value = strokes
    widget.iterations.value = 30
    widget.preview_every.value = 0
    widget.train_button.clicked.emit()
    wait_done(qtbot, widget)
    assert widget.model.config["architecture"]["in_channels"] == 2 + 3  # + stage 1's classes
    assert widget.model.stage1.channels == 2
    assert "2 channels" in widget.model_info.value
    dice = dice_per_class(viewer.layers["nuclei prediction"].data, sample.ground_truth)
    assert dice[2] > 0.7 and dice[3] > 0.7, dice
    np.testing.assert_array_equal(strokes.data, sample.strokes)  # never changed
    # Predicting with one channel only: one notification, nothing changed.
    before = np.array(viewer.layers["nuclei prediction"].data)
    widget.channels.value = []
    widget.predict_button.clicked.emit()
    assert not widget.running
    assert any("takes 2 channel(s)" in m for m in messages), messages
    np.testing.assert_array_equal(viewer.layers["nuclei prediction"].data, before)


def test_widget_2d_network_and_voxel_size_warning(make_napari_viewer, qtbot, sample):
    from napari.utils.notifications import notification_manager

    from napari_voxseg._qt.widget import VoxSegWidget

    viewer = make_napari_viewer()
    layer = viewer.add_image(sample.image, name="cells", scale=sample.voxel_size)
    viewer.add_labels(sample.strokes.copy(), name="strokes", scale=sample.voxel_size)
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_choice.value = layer
    widget.labels_choice.value = viewer.layers["strokes"]
    widget.network.value = "2d"
    widget.iterations.value = 20
    widget.preview_every.value = 0
    widget.train_button.clicked.emit()
    wait_done(qtbot, widget)
    assert widget.model.config["architecture"]["name"] == "unet2d"
    assert "2D U-Net" in widget.model_info.value
    assert widget.model.config["voxel_size"] == [0.5, 0.5, 0.5]

    # The same volume at twice the voxel size: a warning with a Resample button.
    coarse = viewer.add_image(sample.image[::2, ::2, ::2], name="coarse", scale=(1, 1, 1))
    widget.image_choice.value = coarse
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        widget.predict_button.clicked.emit()
        wait_done(qtbot, widget)
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    warnings = [n for n in seen if "voxel size" in str(n.message)]
    assert len(warnings) == 1 and not widget.resample.value
    assert viewer.layers["coarse prediction"].data.shape == (24, 48, 48)
    (label, resample_again), = warnings[0].actions
    assert label == "Resample"
    resample_again(None)  # what pressing the button does
    assert widget.resample.value
    wait_done(qtbot, widget)
    expected = predict(widget.model, coarse.data, voxel_size=(1, 1, 1), resample=True)
    np.testing.assert_array_equal(viewer.layers["coarse prediction"].data, expected)
