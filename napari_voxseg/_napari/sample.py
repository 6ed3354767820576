"""File > Open Sample > VoxSeg: a synthetic volume with example strokes and its ground truth."""

from __future__ import annotations

from ..core.synthetic import make_sample

SAMPLE_NAME = "voxseg sample"


def make_sample_data():
    sample = make_sample()
    scale = sample.voxel_size
    return [
        (sample.image, {"name": SAMPLE_NAME, "scale": scale}, "image"),
        (sample.ground_truth, {"name": f"{SAMPLE_NAME} ground truth", "scale": scale,
                               "visible": False}, "labels"),
        (sample.strokes, {"name": f"{SAMPLE_NAME} strokes", "scale": scale}, "labels"),
    ]
