"""The acceptance figure: default settings, example strokes only, Dice >= 0.9 for every class."""

import pytest

from napari_voxseg.core import TrainConfig, dice_per_class, predict, train


@pytest.mark.slow
def test_default_training_on_the_sample_reaches_dice_0_9(sample):
    result = train(sample.image, sample.strokes, TrainConfig(), voxel_size=sample.voxel_size)
    dice = dice_per_class(predict(result.model, sample.image), sample.ground_truth)
    assert set(dice) == {1, 2, 3}
    assert min(dice.values()) >= 0.9, dice
