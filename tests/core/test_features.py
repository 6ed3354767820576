"""The torch filter bank equals scipy.ndimage's filters; blocks equal the whole; stage 1."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_voxseg.core import features as fb
from napari_voxseg.core import stage1

SCALES = (0.7, 1.6, 3.5)


@pytest.fixture(autouse=True)
def one_thread():
    """These volumes are tiny: a second thread only waits (and the CPU is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _volume(shape=(14, 18, 22), seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.random(shape)
    return (ndi.gaussian_filter(noise, 1.0) + 0.2 * noise).astype(np.float32)


def _scipy_hessian(x, sigmas, unit):
    h = np.empty(x.shape + (3, 3))
    for a in range(3):
        for b in range(a, 3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            h[..., a, b] = h[..., b, a] = ndi.gaussian_filter(x, sigmas, order=order) \
                * unit[a] * unit[b]
    return h


@pytest.mark.parametrize("sigma", [0.3, 0.7, 1.6, 5.0])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_kernels_are_scipys(sigma, order):
    delta = np.zeros(61)
    delta[30] = 1.0
    response = ndi.gaussian_filter1d(delta, sigma, order=order, mode="constant")
    kernel = fb.correlation_kernel(sigma, order)
    r = len(kernel) // 2
    assert r == int(4 * sigma + 0.5)
    np.testing.assert_allclose(kernel[::-1], response[30 - r:31 + r], rtol=0, atol=1e-12)


@pytest.mark.parametrize("voxel_size", [None, (2.0, 1.0, 1.0), (1.0, 0.5, 0.6)])
def test_bank_equals_scipy(voxel_size):
    x = _volume().astype(np.float64)
    feats = fb.feature_bank(x.astype(np.float32), voxel_size, scales=SCALES,
                            normalize=False).numpy().astype(np.float64)
    names = fb.feature_names(1, SCALES)
    assert feats.shape == (len(names), *x.shape)
    get = {n: f for n, f in zip(names, feats)}
    np.testing.assert_allclose(get["intensity"], x, atol=1e-7)
    spacing = fb.relative_spacing(voxel_size)
    for scale in SCALES:
        sigmas = fb.axis_sigmas(scale, voxel_size)
        assert min(sigmas) >= fb.MIN_SIGMA
        unit = [scale / s for s in spacing]
        smooth = ndi.gaussian_filter(x, sigmas)  # truncate 4, mode 'reflect': the defaults
        np.testing.assert_allclose(get[f"gauss_{scale:g}"], smooth, atol=2e-6)
        grad = np.sqrt(sum((ndi.gaussian_filter(x, sigmas, order=np.eye(3, dtype=int)[a])
                            * unit[a]) ** 2 for a in range(3)))
        np.testing.assert_allclose(get[f"gradmag_{scale:g}"], grad, atol=2e-6)
        hessian = _scipy_hessian(x, sigmas, unit)
        np.testing.assert_allclose(get[f"log_{scale:g}"], np.trace(hessian, axis1=-2, axis2=-1),
                                   atol=2e-6)
        if voxel_size is None:  # the scipy one-liners, up to the scale normalization
            np.testing.assert_allclose(get[f"gradmag_{scale:g}"] / scale,
                                       ndi.gaussian_gradient_magnitude(x, scale), atol=2e-6)
            np.testing.assert_allclose(get[f"log_{scale:g}"] / scale**2,
                                       ndi.gaussian_laplace(x, scale), atol=2e-6)
        eigen = np.linalg.eigvalsh(hessian)  # ascending
        tolerance = 1e-4 * np.abs(hessian).max()
        for i in range(3):
            np.testing.assert_allclose(get[f"hessian{i}_{scale:g}"], eigen[..., i],
                                       atol=tolerance)
    for a, b in zip(SCALES[:-1], SCALES[1:]):
        np.testing.assert_allclose(get[f"dog_{a:g}_{b:g}"],
                                   get[f"gauss_{a:g}"] - get[f"gauss_{b:g}"], atol=1e-6)


def test_unsmoothed_axis_uses_central_differences():
    x = _volume((6, 12, 12)).astype(np.float64)
    voxel = (4.0, 1.0, 1.0)  # sigma along Z: 0.7 / 4 < MIN_SIGMA
    feats = fb.feature_bank(x.astype(np.float32), voxel, scales=(0.7,), normalize=False)
    get = dict(zip(fb.feature_names(1, (0.7,)), feats.numpy().astype(np.float64)))
    np.testing.assert_allclose(get["gauss_0.7"], ndi.gaussian_filter(x, (0, 0.7, 0.7)),
                               atol=2e-6)
    smooth = ndi.gaussian_filter(x, (0, 0.7, 0.7))
    padded = np.pad(smooth, ((1, 1), (0, 0), (0, 0)), mode="symmetric")  # scipy's 'reflect'
    dz = (padded[2:] - padded[:-2]) / 2 * (0.7 / 4)
    dy = ndi.gaussian_filter(x, (0, 0.7, 0.7), order=(0, 1, 0)) * 0.7
    dx = ndi.gaussian_filter(x, (0, 0.7, 0.7), order=(0, 0, 1)) * 0.7
    np.testing.assert_allclose(get["gradmag_0.7"], np.sqrt(dz**2 + dy**2 + dx**2), atol=2e-6)


@pytest.mark.parametrize("voxel_size", [None, (3.0, 1.0, 1.0)])
def test_blocks_equal_the_whole(voxel_size):
    rng = np.random.default_rng(1)
    image = rng.normal(100, 20, (2, 9, 23, 17)).astype(np.float32)  # smaller than the halo
    whole = fb.feature_bank(image, voxel_size, scales=SCALES)
    bounds = fb.volume_bounds(image, 1.0, 99.8)[0]
    for start, stop in [((0, 0, 0), (9, 23, 17)), ((2, 5, 3), (7, 20, 9)),
                        ((8, 22, 16), (9, 23, 17)), ((0, 11, 0), (4, 12, 17))]:
        block = fb.feature_block(image, start, stop, voxel_size=voxel_size, scales=SCALES,
                                 bounds=bounds)
        region = (slice(None), *(slice(a, b) for a, b in zip(start, stop)))
        torch.testing.assert_close(block, whole[region], rtol=1e-5, atol=1e-5)
    assembled = torch.empty_like(whole)
    for region, block in fb.iter_feature_blocks(image, (5, 12, 9), voxel_size=voxel_size,
                                                scales=SCALES):
        assembled[(slice(None), *region)] = block
    torch.testing.assert_close(assembled, whole, rtol=1e-5, atol=1e-5)


def test_normalized_features_ignore_gain_and_offset_and_float16_is_close():
    image = _volume()[None] * 1000 + 50
    reference = fb.feature_bank(image, scales=SCALES)
    assert len(fb.feature_names(1, SCALES)) == reference.shape[0]
    torch.testing.assert_close(fb.feature_bank(image * 3.5 - 20, scales=SCALES), reference,
                               rtol=1e-4, atol=1e-4)
    half = fb.feature_bank(image, scales=SCALES, dtype=torch.float16)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), reference, rtol=2e-3, atol=2e-3)


def test_bad_regions_and_scales_are_refused():
    image = np.zeros((1, 4, 4, 4), np.float32)
    with pytest.raises(ValueError):
        fb.feature_block(image, (0, 0, 0), (5, 4, 4))
    with pytest.raises(ValueError):
        fb.feature_block(image, (0, 0, 0), (4, 4, 4), scales=(0.0,))
    with pytest.raises(ValueError):
        fb.feature_bank(image, voxel_size=(1.0, -1.0, 1.0))


def test_stage1_beats_chance_and_round_trips(small_volume, tmp_path):
    from safetensors.torch import load_file, save_file

    from napari_voxseg.core.errors import VoxSegError
    from napari_voxseg.core.metrics import dice_per_class

    image, truth, strokes = small_volume
    feats = fb.feature_bank(image, scales=SCALES, dtype=torch.float16)
    params = stage1.fit(feats, strokes, scales=SCALES)
    assert all(isinstance(v, torch.Tensor) for v in params.values())
    labels = stage1.predict_labels(params, feats)
    assert min(dice_per_class(labels, truth).values()) > 0.9
    save_file(params, tmp_path / "stage1.safetensors")
    loaded = load_file(tmp_path / "stage1.safetensors")
    probs = stage1.predict_proba(params, feats)
    torch.testing.assert_close(stage1.predict_proba(loaded, feats), probs)
    blockwise = stage1.predict_image(loaded, image[None], block=(7, 20, 13))
    np.testing.assert_allclose(blockwise, probs.numpy(), atol=2e-3)
    with pytest.raises(VoxSegError, match="two classes"):
        stage1.fit(feats, np.where(strokes == 1, 1, 0), scales=SCALES)
