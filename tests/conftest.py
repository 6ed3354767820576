import numpy as np
import pytest

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
