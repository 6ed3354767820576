"""File > Open Sample > VoxSeg: a synthetic volume with example strokes and its ground truth,
for each of the three tasks (multi-class, multi-label, regression)."""

from __future__ import annotations

from ..core.synthetic import MULTILABEL_NAMES, distance_target, make_sample, multilabel_from

SAMPLE_NAME = "voxseg sample"
# In the metadata of the sample's ground-truth layers: never offered as the strokes to train on
# by default (the widget compares with them instead).
GROUND_TRUTH_KEY = "voxseg_ground_truth"
# In the metadata of an annotation layer: the names of its classes 1, 2, ... (the widget's
# class list shows and edits them; training stores them in the model).
CLASS_NAMES_KEY = "voxseg_class_names"


def _image(sample):
    return (sample.image, {"name": SAMPLE_NAME, "scale": sample.voxel_size}, "image")


def make_sample_data():
    """Multi-class: background, nuclei, tubes; strokes on three slices."""
    sample = make_sample()
    scale = sample.voxel_size
    return [
        _image(sample),
        (sample.ground_truth, {"name": f"{SAMPLE_NAME} ground truth", "scale": scale,
                               "visible": False, "metadata": {GROUND_TRUTH_KEY: True}},
         "labels"),
        (sample.strokes, {"name": f"{SAMPLE_NAME} strokes", "scale": scale,
                          "metadata": {CLASS_NAMES_KEY: list(sample.class_names)}}, "labels"),
    ]


def make_multilabel_data():
    """Multi-label: two overlapping classes ('object' and 'tube'), one annotation layer each."""
    sample = make_sample()
    scale = sample.voxel_size
    strokes, truth = multilabel_from(sample.strokes), multilabel_from(sample.ground_truth)
    layers = [_image(sample)]
    for i, name in enumerate(MULTILABEL_NAMES):
        layers.append((truth[i], {"name": f"{SAMPLE_NAME} {name} ground truth", "scale": scale,
                                  "visible": False, "metadata": {GROUND_TRUTH_KEY: True}},
                       "labels"))
        layers.append((strokes[i], {"name": f"{SAMPLE_NAME} {name}", "scale": scale}, "labels"))
    return layers


def make_regression_data():
    """Regression: distance to the nuclear surface as the target, known on three slices."""
    sample = make_sample()
    scale = sample.voxel_size
    target, mask = distance_target(sample)
    return [
        _image(sample),
        (target, {"name": f"{SAMPLE_NAME} distance", "scale": scale, "visible": False,
                  "colormap": "viridis"}, "image"),
        (mask, {"name": f"{SAMPLE_NAME} known", "scale": scale, "opacity": 0.3}, "labels"),
    ]
