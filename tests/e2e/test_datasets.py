"""Training on several volumes: --pair repeated, --dataset DIR, and train([(image, labels),
...], config) in Python; pairs of different shapes and voxel sizes."""

import json

import numpy as np
import pytest
from helpers import run_cli as run
from helpers import tree

from napari_voxseg.core import TrainConfig, load_model, predict, read_volume, write_volume
from napari_voxseg.core.errors import VoxSegError
from napari_voxseg.core.volumes import GAP, gather


def _second(small_volume):
    """Another volume of the same kind: other shape, voxels half as deep (1 x 1 x 1)."""
    image, truth, strokes = small_volume
    image2 = np.repeat(image[:, 4:28, 2:30], 2, axis=0)  # (32, 24, 28)
    truth2 = np.repeat(truth[:, 4:28, 2:30], 2, axis=0)
    strokes2 = np.zeros_like(truth2)
    strokes2[12, 1:3, 1:27] = 1
    strokes2[12, 10, 8:20] = 2
    return image2, truth2, strokes2


def test_two_pairs_of_other_shapes_and_voxel_sizes(files, small_volume, tmp_path):
    image2, truth2, strokes2 = _second(small_volume)
    write_volume(tmp_path / "b.tif", image2, (1.0, 1.0, 1.0))
    write_volume(tmp_path / "b-strokes.tif", strokes2, (1.0, 1.0, 1.0))
    proc = run("train", "--pair", files / "image.tif", files / "strokes.tif", "--pair",
               tmp_path / "b.tif", tmp_path / "b-strokes.tif", "--out", tmp_path / "m",
               "--iterations", 30, "--patch-size", "16,32,32")
    assert proc.returncode == 0, proc.stderr
    assert "note: pair 2 resampled from voxel size 1x1x1 to 2x1x1" in proc.stderr
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["training"]["volumes"] == 2 and config["voxel_size"] == [2.0, 1.0, 1.0]
    model = load_model(tmp_path / "m")
    image, truth, _ = small_volume
    assert (predict(model, image) == truth).mean() > 0.95
    proc = run("predict", tmp_path / "m", tmp_path / "b.tif", "--out", tmp_path / "pb.tif",
               "--resample")
    assert proc.returncode == 0, proc.stderr
    assert (read_volume(tmp_path / "pb.tif")[0] == truth2).mean() > 0.95


def test_a_dataset_folder_and_its_mistakes(files, small_volume, tmp_path):
    image2, _, strokes2 = _second(small_volume)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for name in ("image.tif", "strokes.tif"):
        (data / ("images" if name == "image.tif" else "labels") / "a.tif").write_bytes(
            (files / name).read_bytes())
    write_volume(data / "images" / "b.npy", image2)
    write_volume(data / "labels" / "b.npy", strokes2)
    proc = run("train", "--dataset", data, "--out", tmp_path / "m", "--iterations", 4,
               "--patch-size", "16,32,32", "--voxel-size", "1,1,1")
    assert proc.returncode == 0, proc.stderr
    assert load_model(tmp_path / "m").config["training"]["volumes"] == 2

    # three mistakes at once, then each put right in turn: every run refuses the first left
    write_volume(data / "labels" / "b.npy", strokes2[:, :20], overwrite=True)  # wrong shape
    write_volume(data / "labels" / "c.npy", strokes2)  # no image of that name
    (data / "labels" / "c.npy").rename(data / "images" / "c.npy")  # ... now no labels
    (data / "images" / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    for words, undo in ((("notes.txt", "cannot read"), data / "images" / "notes.txt"),
                        (("no labels for c.npy",), data / "images" / "c.npy"),
                        (("pair 2: labels", "do not match"), None)):
        proc = run("train", "--dataset", data, "--out", tmp_path / "m2")
        message = proc.stderr.strip()
        assert proc.returncode == 2 and "\n" not in message, message
        assert all(w in message for w in words), message
        assert not (tmp_path / "m2").exists() and tree(tmp_path) == before
        if undo:
            undo.unlink()
            before = tree(tmp_path)


def test_gather_lays_pairs_side_by_side(small_volume):
    image, _, strokes = small_volume
    image2 = image[:8, :20] * 100 + 50  # other shape and range, same kind
    canvas = gather([(image, strokes), (image2, strokes[:8, :20])])
    assert canvas.image.shape == (1, 16, 32, 32 + GAP + 32)
    a, b = canvas.regions
    np.testing.assert_array_equal(canvas.labels[b], strokes[:8, :20])
    # each normalized on its own: the same kind of image lands in the same range
    assert abs(np.percentile(canvas.image[(0, *a)], 50) -
               np.percentile(canvas.image[(0, *b)], 50)) < 0.1
    assert not canvas.labels[:, :, 32:32 + GAP].any() and not canvas.image[0, :, :, 32:48].any()
    with pytest.raises(VoxSegError, match="channel"):
        gather([(image, strokes), (np.stack([image, image]), strokes)])
    with pytest.raises(VoxSegError, match="regression"):
        gather([(image, image)], task="regression")


def test_train_takes_a_list_of_pairs(small_volume):
    from napari_voxseg.core import train

    image, truth, strokes = small_volume
    result = train([(image, strokes), (image[:, ::-1].copy(), strokes[:, ::-1].copy())],
                   TrainConfig(iterations=3, patch_size=(8, 16, 16), base_channels=4, depth=2))
    assert result.model.config["training"]["volumes"] == 2
    assert predict(result.model, image).shape == truth.shape


def test_strokes_one_slice_thin_survive_thicker_slices(small_volume):
    image, _, strokes = small_volume
    thin = np.zeros_like(strokes)
    thin[5] = strokes[5]  # one slice of strokes, in a volume of 1 x 1 x 1 voxels
    canvas = gather([(image[::4], strokes[::4]), (image, thin)], [(4, 1, 1), (1, 1, 1)])
    second = canvas.labels[canvas.regions[1]]
    assert second.shape == (4, 32, 32) and np.count_nonzero(second) == np.count_nonzero(thin)
    assert "its strokes: " in canvas.notes[0]


def test_the_canvas_follows_new_strokes_and_crops_previews(small_volume):
    from napari_voxseg.core.events import PreviewEvent
    from napari_voxseg.core.infer import PredictResult

    image, _, strokes = small_volume
    canvas = gather([(image, strokes), (image[::2], strokes[::2])], [(1, 1, 1), (2, 1, 1)])
    painted = strokes.copy()
    painted[0, 0, 0] = 2  # a stroke painted meanwhile on the second pair
    fresh = canvas.follow(lambda: [strokes, painted])()
    assert fresh[canvas.regions[1]][0, 0, 0] == 2
    np.testing.assert_array_equal(fresh[canvas.regions[0]], strokes)
    assert canvas.follow(lambda: None)() is None

    whole = tuple(slice(0, n) for n in canvas.labels.shape)
    labels = np.arange(canvas.labels.size).reshape(canvas.labels.shape)
    events = iter([PreviewEvent(0, 1, whole, PredictResult(labels), 0, 0.0, 0.0, stage=1),
                   PreviewEvent(0, 1, (slice(0, 2), slice(0, 2), slice(40, 44)),
                                PredictResult(labels[:2, :2, 40:44]), 0, 0.0, 0.0)])

    def loop():
        yield from events
        return "done"

    seen = []
    gen = canvas.first_pair_only(loop())
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as stop:
            assert stop.value == "done"
            break
    assert len(seen) == 1 and seen[0].region == canvas.regions[0]
    np.testing.assert_array_equal(seen[0].result.labels, labels[canvas.regions[0]])
