import numpy as np
import pytest
from helpers import run_cli

from napari_voxseg.core import write_volume
from napari_voxseg.core.synthetic import make_sample


@pytest.fixture(scope="session")
def sample():
    return make_sample()


@pytest.fixture(scope="session")
def small_volume():
    """A tiny two-class volume (bright box in noise) with strokes on two slices."""
    rng = np.random.default_rng(1)
    image = rng.normal(0, 0.1, (16, 32, 32)).astype(np.float32)
    truth = np.ones((16, 32, 32), np.uint8)
    truth[4:12, 8:24, 8:24] = 2
    image[truth == 2] += 1.0
    strokes = np.zeros_like(truth)
    for z in (5, 9):
        strokes[z, 2:30, (3, 28)] = 1
        strokes[z, (4, 27), 2:30] = 1
        strokes[z, 10:22, 10:22:4] = 2
    return image, truth, strokes


@pytest.fixture(scope="session")
def files(tmp_path_factory, small_volume):
    image, truth, strokes = small_volume
    d = tmp_path_factory.mktemp("cli")
    write_volume(d / "image.tif", image, (2.0, 1.0, 1.0))
    write_volume(d / "strokes.tif", strokes, (2.0, 1.0, 1.0))
    write_volume(d / "truth.npy", truth)
    return d


@pytest.fixture(scope="session")
def trained(files):
    proc = run_cli("train", files / "image.tif", files / "strokes.tif", "--out",
                   files / "model", "--iterations", 60, "--patch-size", "16,32,32",
                   "--class-weights", "auto")
    assert proc.returncode == 0, proc.stderr
    return files / "model"


@pytest.fixture
def messages():
    """The napari notifications shown during a test."""
    from napari.utils.notifications import notification_manager

    seen = []

    def record(event):
        seen.append(str(getattr(event, "message", event)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def sample_widget(make_napari_viewer):
    """A viewer with the sample and the VoxSeg widget docked, the image and strokes chosen."""
    from napari_voxseg._qt.widget import VoxSegWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-voxseg", "cells")
    widget = VoxSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="VoxSeg")
    widget.image_choice.value = viewer.layers["voxseg sample"]
    widget.labels_choice.value = viewer.layers["voxseg sample strokes"]
    return viewer, widget
