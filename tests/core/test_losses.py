"""Every loss against a reference (PyTorch or MONAI), its ignore mask, and a train-save-load-predict
round trip per loss; class weights; target checks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY
from monai.losses import DiceCELoss, DiceLoss, FocalLoss

from napari_voxseg.core import (
    TrainConfig,
    VoxSegError,
    class_weights,
    load_model,
    predict,
    save_model,
    train,
)
from napari_voxseg.core.boundary import boundary_weight_map
from napari_voxseg.core.losses import DEFAULT_LOSS, LOSSES, build_loss, losses_for, resolve_loss
from napari_voxseg.core.targets import (
    check_multilabel,
    check_regression,
    prepare_target,
)

K = 3
W = [0.5, 2.0, 1.25]


@pytest.fixture
def dense():
    """Logits and dense targets (every voxel annotated) for each task."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, K, 4, 5, 6, generator=g) * 2
    index = torch.randint(0, K, (2, 4, 5, 6), generator=g)  # classes 0..K-1
    present = torch.randint(0, 2, (2, K, 4, 5, 6), generator=g)  # multi-label 0/1
    values = torch.randn(2, 1, 4, 5, 6, generator=g)
    return logits, index, present, values


def onehot(index):
    return F.one_hot(index, K).movedim(-1, 1).float()


# Each case: loss name, task, weights, our call, the reference's value. Our targets use the
# annotation values: classes 1..K, multi-label 1 = absent / 2 = present.
def references(logits, index, present, values, w):
    wt = None if w is None else torch.tensor(w)
    ours_mc = index + 1
    ours_ml = present + 1
    pos = None if wt is None else wt.view(-1, 1, 1, 1)
    bce = F.binary_cross_entropy_with_logits(logits, present.float(), pos_weight=pos)
    return {
        "ce": (ours_mc, F.cross_entropy(logits, index, weight=wt)),
        "dice": (ours_mc, DiceLoss(softmax=True, to_onehot_y=True, batch=True, weight=wt)(
            logits, index.unsqueeze(1))),
        "dice_ce": (ours_mc, DiceCELoss(softmax=True, to_onehot_y=True, batch=True, weight=wt)(
            logits, index.unsqueeze(1))),
        # MONAI's mean runs over voxels and classes; ours over voxels, as cross-entropy does.
        "focal": (ours_mc, K * FocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0,
                                         weight=wt)(logits, index.unsqueeze(1))),
        "bce": (ours_ml, bce),
        "dice_ml": (ours_ml, DiceLoss(sigmoid=True, batch=True, weight=wt)(logits, present)),
        "dice_bce": (ours_ml, DiceLoss(sigmoid=True, batch=True, weight=wt)(logits, present)
                     + bce),
        "focal_ml": (ours_ml, FocalLoss(gamma=2.0, alpha=w)(logits, present)),
    }


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name", ["ce", "dice", "dice_ce", "focal", "bce", "dice_ml",
                                  "dice_bce", "focal_ml"])
def test_each_loss_equals_its_reference_on_dense_labels(dense, name, weighted):
    logits, index, present, values = dense
    w = W if weighted else None
    target, expected = references(logits, index, present, values, w)[name]
    ours = LOSSES[name].factory(class_weights=w)(logits, target)
    assert float(ours) == pytest.approx(float(expected), abs=1e-5)


def test_regression_and_boundary_losses_equal_their_references(dense):
    logits, index, _, values = dense
    out = logits[:, :1]
    assert float(build_loss("mse", task="regression")(out, values)) == pytest.approx(
        float(F.mse_loss(out, values)), abs=1e-6)
    assert float(build_loss("l1", task="regression")(out, values)) == pytest.approx(
        float(F.l1_loss(out, values)), abs=1e-6)
    # Boundary-weighted cross-entropy: the voxel-weighted mean of cross-entropy.
    voxel_w = torch.rand(index.shape, generator=torch.Generator().manual_seed(1)) * 5 + 1
    ours = build_loss("boundary_ce", class_weights=W)(logits, index + 1, voxel_w)
    per_voxel = torch.tensor(W)[index] * voxel_w
    expected = (F.cross_entropy(logits, index, reduction="none") * per_voxel).sum() \
        / per_voxel.sum()
    assert float(ours) == pytest.approx(float(expected), abs=1e-5)
    # Uniform voxel weights make it plain (weighted) cross-entropy.
    flat = build_loss("boundary_ce")(logits, index + 1, torch.ones_like(voxel_w))
    assert float(flat) == pytest.approx(float(F.cross_entropy(logits, index)), abs=1e-5)


def test_focal_with_gamma_zero_is_cross_entropy(dense):
    logits, index, present, _ = dense
    focal = build_loss("focal", focal_gamma=0.0)(logits, index + 1)
    assert float(focal) == pytest.approx(float(F.cross_entropy(logits, index)), abs=1e-5)
    focal_ml = build_loss("focal", task="multilabel", focal_gamma=0.0)(logits, present + 1)
    bce = F.binary_cross_entropy_with_logits(logits, present.float())
    assert float(focal_ml) == pytest.approx(float(bce), abs=1e-5)


def test_masked_dice_equals_monai_with_its_ignore_index(dense):
    """On sparse labels the Dice terms sum over annotated voxels only, as MONAI's ignore_index."""
    logits, index, _, _ = dense
    labels = index + 1
    labels[:, :, ::2] = 0
    monai_target = (labels - 1).unsqueeze(1)  # not annotated -> -1
    expected = DiceLoss(softmax=True, to_onehot_y=True, batch=True, ignore_index=-1)(
        logits, monai_target)
    assert float(build_loss("dice")(logits, labels)) == pytest.approx(float(expected), abs=1e-5)


def _targets_for(task, shape, annotated):
    """A sparse target for ``task`` where ``annotated`` (bool (N, Z, Y, X)) is True."""
    g = torch.Generator().manual_seed(2)
    if task == "multiclass":
        return (torch.randint(1, K + 1, shape, generator=g) * annotated).long()
    if task == "multilabel":
        t = torch.randint(1, 3, (shape[0], K, *shape[1:]), generator=g)
        return (t * annotated.unsqueeze(1)).long()
    t = torch.randn(shape[0], 1, *shape[1:], generator=g)
    return torch.where(annotated.unsqueeze(1), t, torch.full_like(t, float("nan")))


ALL = [(task, name) for task in ("multiclass", "multilabel", "regression")
       for name in losses_for(task)]


@pytest.mark.parametrize("task,name", ALL)
def test_unannotated_voxels_get_zero_gradient_and_empty_batches_give_zero(task, name):
    shape = (2, 4, 6, 6)
    annotated = torch.zeros(shape, dtype=torch.bool)
    annotated[:, 1, 1:4, 1:5] = True
    annotated[1, 3, 2, :] = True
    outputs = 1 if task == "regression" else K
    logits = torch.randn(2, outputs, *shape[1:], requires_grad=True)
    weights = None if task == "regression" else W
    loss_fn = build_loss(name, task=task, class_weights=weights)
    voxel_w = torch.full(shape, 2.0) if loss_fn.uses_voxel_weights else None
    loss_fn(logits, _targets_for(task, shape, annotated), voxel_w).backward()
    grad = logits.grad.abs().sum(dim=1)
    assert (grad[~annotated] == 0).all(), "an unannotated voxel got a gradient"
    assert grad[annotated].sum() > 0

    logits.grad = None
    nothing = torch.zeros(shape, dtype=torch.bool)
    empty = loss_fn(logits, _targets_for(task, shape, nothing), voxel_w)
    assert float(empty.detach()) == 0.0
    empty.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_losses_are_offered_per_task_and_bad_combinations_are_refused():
    assert losses_for("multiclass") == ["ce", "dice", "dice_ce", "focal", "boundary_ce"]
    assert losses_for("multilabel") == ["bce", "dice_bce", "dice", "focal"]
    assert losses_for("regression") == ["mse", "l1"]
    assert {resolve_loss(None, t) for t in DEFAULT_LOSS} == {"ce", "bce", "mse"}
    assert resolve_loss("dice", "multilabel") == "dice_ml"
    for name, task, fragment in (("bce", "multiclass", "for multilabel tasks"),
                                 ("ce", "regression", "for multiclass tasks"),
                                 ("mse", "multilabel", "for regression"),
                                 ("hinge", "multiclass", "unknown loss"),
                                 ("ce", "instance", "unknown task")):
        with pytest.raises(VoxSegError, match=fragment):
            build_loss(name, task=task)
    with pytest.raises(VoxSegError, match="no class weights"):
        build_loss("mse", task="regression", class_weights=[1.0])
    with pytest.raises(VoxSegError, match="focal gamma"):
        build_loss("focal", focal_gamma=-1)
    with pytest.raises(VoxSegError, match="2 class weights for 3"):
        build_loss("dice", class_weights=[1, 2])(torch.zeros(1, 3, 2, 2, 2),
                                                 torch.ones(1, 2, 2, 2, dtype=torch.long))


# ---- class weights ----------------------------------------------------------------------------
def test_inverse_and_median_frequency_weights():
    labels = np.array([1] * 60 + [2] * 30 + [3] * 10 + [0] * 50, np.uint8)
    auto = class_weights("auto", labels, 3)
    np.testing.assert_allclose(auto / auto[0], [1, 2, 6], rtol=1e-6)
    assert auto.mean() == pytest.approx(1.0)
    # Median frequency balancing: median(0.6, 0.3, 0.1) / frequency.
    np.testing.assert_allclose(class_weights("median", labels, 3), [0.5, 1.0, 3.0], rtol=1e-6)
    # A class without strokes gets 0 under both, and never NaN.
    sparse = np.array([1] * 5 + [3] * 5, np.uint8)
    for spec in ("auto", "median"):
        w = class_weights(spec, sparse, 3)
        assert np.isfinite(w).all() and w[1] == 0


def test_multilabel_weights_are_positive_weights():
    a = np.array([1] * 30 + [2] * 10 + [0] * 5, np.uint8)  # 10 present of 40
    b = np.array([1] * 20 + [2] * 20 + [0] * 5, np.uint8)  # 20 present of 40
    labels = np.stack([a, b])
    np.testing.assert_allclose(class_weights("auto", labels, 2, task="multilabel"), [3.0, 1.0])
    # Median of the present frequencies (0.25, 0.5) = 0.375, divided by each.
    np.testing.assert_allclose(class_weights("median", labels, 2, task="multilabel"),
                               [1.5, 0.75], rtol=1e-6)
    with pytest.raises(VoxSegError, match="regression task"):
        class_weights("auto", np.zeros(3, np.float32), 1, task="regression")


# ---- targets ----------------------------------------------------------------------------------
def test_multilabel_annotations_are_checked():
    shape = (4, 4, 4)
    good = np.zeros(shape, np.uint8)
    good[0, 0, :2], good[1, 1, :2] = 1, 2
    data, k = check_multilabel([good, good], shape)
    assert data.shape == (2, *shape) and k == 2
    three = good.copy()
    three[2, 2, 2] = 3
    only_absent = np.where(good == 2, 0, good).astype(np.uint8)
    for labels, fragment in (([good, three], "value 3"), ([good, only_absent], "no 'present'"),
                             ([good, np.where(good == 1, 0, good)], "no 'absent'"),
                             ([good, good[:2]], "shape"), ([], "no annotation layers"),
                             ([good, good.astype(np.float32)], "dtype")):
        with pytest.raises(VoxSegError, match=fragment):
            check_multilabel(labels, shape)
    with pytest.raises(VoxSegError, match="model has 3 classes"):
        check_multilabel([good, good], shape, num_classes=3)


def test_regression_targets_and_masks():
    target = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1] = 1
    with_nan = target.copy()
    with_nan[0] = np.nan  # outside the mask: allowed, not known
    values = check_regression(with_nan, (4, 4, 4), mask)
    assert np.isnan(values[0, 0]).all() and np.isnan(values[0, 2:]).all()
    np.testing.assert_array_equal(values[0, 1], target[1])
    assert np.isnan(with_nan[0]).all() and not np.isnan(with_nan[1:]).any()  # input unchanged
    with pytest.raises(VoxSegError, match="no mask"):
        check_regression(with_nan, (4, 4, 4))
    inside = with_nan.copy()
    inside[1, 0, 0] = np.inf
    with pytest.raises(VoxSegError, match="inside the mask"):
        check_regression(inside, (4, 4, 4), mask)
    with pytest.raises(VoxSegError, match="no voxel as known"):
        check_regression(target, (4, 4, 4), np.zeros_like(mask))
    prepared = prepare_target("regression", target, (4, 4, 4), mask=mask)
    known = prepared.data[0][mask > 0]
    assert abs(known.mean()) < 1e-5 and known.std() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(VoxSegError, match="mask is for regression"):
        prepare_target("multiclass", mask + 1, (4, 4, 4), mask=mask)


def test_boundary_weights_are_high_at_class_boundaries():
    labels = np.zeros((1, 1, 40), np.uint8)
    labels[0, 0, :20], labels[0, 0, 20:] = 1, 2
    w = boundary_weight_map(labels, w0=10, sigma=5)[0, 0]
    assert w[19] == pytest.approx(1 + 10 * np.exp(-1 / 50), rel=1e-5)  # 1 voxel from class 2
    assert w[0] < 1.1 and w[19] > w[10] > w[0]
    # Unannotated voxels in between do not count as a class: only painted classes meet.
    strokes = labels.copy()
    strokes[0, 0, 15:25] = 0
    ws = boundary_weight_map(strokes, w0=10, sigma=5)[0, 0]
    assert ws[14] == pytest.approx(1 + 10 * np.exp(-(11**2) / 50), rel=1e-5)
    # Voxel size stretches distances: Z voxels 4x longer put Z neighbours further apart.
    z = np.zeros((40, 1, 1), np.uint8)
    z[:20], z[20:] = 1, 2
    wz = boundary_weight_map(z, w0=10, sigma=5, voxel_size=(4, 1, 1))[:, 0, 0]
    assert wz[18] == pytest.approx(1 + 10 * np.exp(-(8**2) / 50), rel=1e-5)


# ---- a tiny train / save / load / predict round trip per loss ---------------------------------


@pytest.mark.parametrize("task,name", ALL)
def test_every_loss_trains_saves_loads_and_predicts(task, name, small_volume, tmp_path):
    image, truth, strokes = small_volume
    kwargs = {}
    if task == "multiclass":
        labels, weights = strokes, "auto"
    elif task == "multilabel":
        box = np.where(strokes == 2, 2, np.where(strokes == 1, 1, 0)).astype(np.uint8)
        labels, weights = [box, np.where(box > 0, 3 - box, 0).astype(np.uint8)], "median"
    else:
        labels, weights = (truth == 2).astype(np.float32) * 5.0, "none"
        kwargs["mask"] = strokes > 0
    config = TrainConfig(task=task, loss=name, class_weights=weights, **TINY)
    result = train(image, labels, config, voxel_size=(1.0, 0.5, 0.5), **kwargs)
    assert len(result.history) == TINY["iterations"]
    assert all(np.isfinite(loss) for _, loss in result.history)
    before = predict(result.model, image)
    save_model(result.model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config["task"] == task and loaded.config["loss"]["name"] == name
    after = predict(loaded, image)
    if task == "regression":
        assert after.shape == image.shape and after.dtype == np.float32
        np.testing.assert_allclose(after, before, atol=1e-5)
    else:
        np.testing.assert_array_equal(after, before)
        expected = (2, *image.shape) if task == "multilabel" else image.shape
        assert after.shape == expected and set(np.unique(after)) <= {1, 2, 3}


def test_boundary_weights_come_from_the_strokes_or_a_prediction(small_volume, monkeypatch):
    import sys

    run_module = sys.modules["napari_voxseg.core.run"]  # where a run is prepared
    image, truth, strokes = small_volume
    seen = []

    def spy(reference, **kwargs):
        seen.append(np.array(reference, copy=True))
        return boundary_weight_map(reference, **kwargs)

    monkeypatch.setattr(run_module, "boundary_weight_map", spy)
    config = TrainConfig(loss="boundary_ce", boundary_weight=4.0, **TINY)
    model = train(image, strokes, config).model
    assert model.config["loss"] == {"name": "boundary_ce", "boundary_weight": 4.0,
                                    "boundary_sigma": 5.0}
    train(image, strokes, config, boundary_reference=truth)
    np.testing.assert_array_equal(seen[0], strokes)
    np.testing.assert_array_equal(seen[1], truth)
    with pytest.raises(VoxSegError, match="boundary reference"):
        train(image, strokes, config, boundary_reference=truth[:2])
