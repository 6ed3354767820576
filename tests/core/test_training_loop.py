"""The core behind interactive training, without napari: live previews, strokes arriving
while training runs, continuing a stopped run exactly, fine-tuning, region prediction. The
network's own loop, one stage (two stages' overlays and held-out strokes: test_validation.py;
continuing a two-stage run exactly: the last test here)."""

import numpy as np
import pytest
import torch

from napari_voxseg.core import (
    TrainConfig,
    VoxSegError,
    iter_predict,
    iter_train,
    predict,
    run_to_end,
    train,
)
from napari_voxseg.core.infer import TileGrid
from napari_voxseg.core.train import PreviewEvent, TrainEvent, _lr_at

FAST = dict(iterations=24, batch_size=1, patch_size=(8, 16, 16), base_channels=4, depth=2,
            num_threads=1, two_stage=False)


def run(gen, events=None):
    """Exhaust a training generator; return (events, previews, result). ``events``: a list
    that the training events are appended to as they come (a ``should_stop`` may read it)."""
    events, previews = ([] if events is None else events), []
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return events, previews, stop.value
        (previews if isinstance(event, PreviewEvent) else events).append(event)


@pytest.mark.parametrize("two_stage", [False, True])
def test_a_stopped_run_continues_exactly_where_it_stopped(small_volume, two_stage):
    image, _, strokes = small_volume
    config = TrainConfig(**{**FAST, "two_stage": two_stage}, seed=5)
    whole = train(image, strokes, config)

    seen: list = []  # the events so far (stage 1 polls should_stop too: count the steps)
    _, _, part = run(iter_train(image, strokes, config, should_stop=lambda: sum(
        isinstance(e, TrainEvent) for e in seen) >= 9), seen)
    assert part.stopped and part.steps == 9 and part.resume.step == 9
    assert part.model.config["training"]["steps_done"] == 9

    events, _, rest = run(iter_train(image, strokes, model=part.model, resume=part.resume))
    assert [e.step for e in events if isinstance(e, TrainEvent)] == list(range(10, 25))
    assert rest.steps == 24 and not rest.stopped and rest.resume is None
    assert rest.model.config["training"]["steps_done"] == 24
    # Same patches, same optimizer state, same schedule: the same losses and weights.
    np.testing.assert_allclose([v for _, v in rest.history], [v for _, v in whole.history],
                               rtol=1e-5, atol=1e-7)
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(rest.model.state_dict()[key], value)


def test_continue_needs_the_model(small_volume):
    image, _, strokes = small_volume
    config = TrainConfig(**FAST)
    calls = []
    _, _, part = run(iter_train(image, strokes, config,
                                should_stop=lambda: len(calls) > 3 or calls.append(1)))
    with pytest.raises(VoxSegError, match="pass the model"):
        run(iter_train(image, strokes, resume=part.resume))


def test_previews_predict_the_region_asked_for(small_volume):
    image, _, strokes = small_volume
    region = (slice(6, 9), slice(0, 32), slice(4, 20))
    asked = []
    config = TrainConfig(**{**FAST, "iterations": 12})

    def where():
        asked.append(1)
        return region if len(asked) != 2 else None  # None: skip that preview

    events, previews, result = run(iter_train(image, strokes, config, preview_region=where,
                                              preview_every=0))
    assert len(asked) == 11 and len(previews) == 10  # before every step but the first
    for p in previews:
        assert p.region == region and p.result.labels.shape == (3, 32, 16)
        assert set(np.unique(p.result.labels)) <= {1, 2}
    # The public API predicts a region the same way.
    assert predict(result.model, image, region=region).shape == (3, 32, 16)


def test_preview_now_forces_one_and_full_slices_are_made_concrete(small_volume):
    image, _, strokes = small_volume
    flags = iter([False, False, True] + [False] * 20)
    _, previews, _ = run(iter_train(image, strokes, TrainConfig(**{**FAST, "iterations": 8}),
                                    preview_region=lambda: (slice(None),) * 3,
                                    preview_every=1e9, preview_now=lambda: next(flags)))
    assert len(previews) == 1
    assert previews[0].region == (slice(0, 16), slice(0, 32), slice(0, 32))


def test_strokes_painted_while_training_join_before_the_next_preview(small_volume):
    image, _, strokes = small_volume
    more = strokes.copy()
    more[12, 2:30, 2] = 1
    mailbox = [None]

    def get_labels():
        value, mailbox[0] = mailbox[0], None
        return value

    gen = iter_train(image, strokes, TrainConfig(**{**FAST, "iterations": 30}),
                     get_labels=get_labels, preview_region=lambda: (slice(12, 13),) + (
                         slice(None),) * 2, preview_every=0)
    first = next(gen)
    assert isinstance(first, TrainEvent) and first.annotated == (strokes > 0).sum()
    mailbox[0] = more  # painted now; the very next preview must have trained on it
    event = next(gen)
    assert isinstance(event, PreviewEvent) and event.annotated == (more > 0).sum()
    gen.close()


def test_fine_tune_keeps_the_models_network_and_normalization(small_volume):
    image, _, strokes = small_volume
    config = TrainConfig(**{**FAST, "iterations": 6, "percentiles": (2.0, 98.0)})
    first = train(image, strokes, config).model
    # The default config says depth 3 and base 8; the model's depth 2, base 4 win.
    tuned = train(image, strokes, TrainConfig(iterations=4, batch_size=1,
                                              patch_size=(8, 16, 16), learning_rate=3e-4,
                                              num_threads=1), model=first).model
    assert tuned.config["architecture"] == first.config["architecture"]
    assert tuned.config["normalization"] == first.config["normalization"]
    assert tuned.config["training"]["steps_done"] == 10
    assert len(tuned.config["training"]["history"]) == 10


def test_warm_up_is_short_for_runs_meant_to_be_stopped():
    assert _lr_at(99, 1_000_000, 1.0) == pytest.approx(1.0, rel=1e-3)
    assert _lr_at(0, 300, 1.0) == pytest.approx(1 / 15)  # 5% of a short run


def test_region_prediction(small_volume):
    image, _, strokes = small_volume
    model = train(image, strokes, TrainConfig(**{**FAST, "iterations": 4})).model
    full = predict(model, image)
    # The whole volume as a region is the whole prediction.
    np.testing.assert_array_equal(predict(model, image, region=(slice(None),) * 3), full)
    # A block is that block of the whole prediction (the tiles of one grid); an empty one is
    # refused.
    block = (slice(4, 12), slice(3, 30), slice(0, 32))
    np.testing.assert_array_equal(predict(model, image, region=block), full[block])
    gen = iter_predict(model, image, region=(slice(3, 3), slice(None), slice(None)))
    with pytest.raises(VoxSegError, match="empty"):
        run_to_end(gen)


def test_tiles_meeting_a_region_come_from_the_one_grid():
    grid = TileGrid.of((40, 100, 100), (16, 32, 32), divisor=(2, 2, 2), overlap=0.5)
    assert grid.starts[0] == (0, 8, 16, 24)
    corners = grid.tiles_meeting((slice(10, 11), slice(0, 100), slice(90, 100)))
    assert {c[0] for c in corners} == {0, 8} and {c[2] for c in corners} == {68}
    # A volume smaller than a tile gets one tile, shrunk to the network's multiple.
    small = TileGrid.of((5, 20, 20), (16, 32, 32), divisor=(4, 4, 4), overlap=0.5)
    assert small.patch == (8, 20, 20) and small.count() == 1


def test_out_of_gpu_memory_shrinks_the_batch_then_the_patch(small_volume):
    image, _, strokes = small_volume
    model = train(image, strokes, TrainConfig(**{**FAST, "iterations": 2})).model

    class Tight(torch.nn.Module):
        """The model on a GPU with room for one patch of at most 8 x 8 x 16 voxels."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, x):
            if x.shape[0] > 1 or x.shape[2:].numel() > 8 * 16 * 8:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.inner(x)

    config = TrainConfig(**{**FAST, "iterations": 5, "batch_size": 2})
    result = train(image, strokes, config, model=Tight(model))
    assert result.steps == 5 and len(result.history) == 5
    assert result.adjustments == [
        "the GPU ran out of memory at step 1; went on with batch 1 and patch (8, 16, 16)",
        "the GPU ran out of memory at step 1; went on with batch 1 and patch (8, 8, 16)"]
    assert result.model.config["patch_size"] == [8, 8, 16]
    assert result.model.config["training"]["batch_size"] == 1

    class Full(Tight):
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(VoxSegError, match="even for one patch"):
        train(image, strokes, config, model=Full(model))


def test_training_precision(small_volume):
    image, truth, strokes = small_volume
    config = dict(FAST, iterations=40, batch_size=2)
    scores = {}
    for precision in ("float32", "bfloat16"):
        model = train(image, strokes, TrainConfig(**config, precision=precision)).model
        assert model.config["training"]["precision"] == precision
        labels = predict(model, image, precision="float32")
        scores[precision] = ((labels == 2) & (truth == 2)).sum() * 2 / (
            (labels == 2).sum() + (truth == 2).sum())
    assert scores["bfloat16"] > 0.8 and abs(scores["bfloat16"] - scores["float32"]) < 0.1
    with pytest.raises(VoxSegError, match="precision"):
        TrainConfig(precision="float8").checked()
