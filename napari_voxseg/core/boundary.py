"""Per-voxel loss weights that grow near class boundaries (the ``boundary_ce`` loss)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import VoxSegError


def boundary_weight_map(reference: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0,
                        voxel_size: Sequence[float] | None = None) -> np.ndarray:
    """Per-voxel loss weights ``1 + w0 * exp(-d^2 / (2 sigma^2))``, after the U-Net paper.

    ``d`` is the distance (in voxels of the finest axis) from each voxel to the nearest voxel of a
    different class in ``reference``: the strokes (0 = not annotated, ignored) or a prediction
    (every voxel labelled). Voxels near where two classes meet weigh up to ``1 + w0``.
    """
    from scipy.ndimage import distance_transform_edt

    reference = np.asarray(reference)
    if not (np.isfinite(w0) and w0 >= 0 and np.isfinite(sigma) and sigma > 0):
        raise VoxSegError(f"boundary weight {w0!r} must be >= 0 and sigma {sigma!r} > 0")
    sampling = None
    if voxel_size is not None:
        v = np.asarray(voxel_size, dtype=np.float64)
        sampling = v / v.min()
    classes = [int(c) for c in np.unique(reference) if c > 0]
    nearest_other = np.full(reference.shape, np.inf, dtype=np.float32)
    if len(classes) >= 2:
        distances = {c: distance_transform_edt(reference != c, sampling=sampling).astype(
            np.float32) for c in classes}
        for c in classes:
            inside = reference == c
            for other in classes:
                if other != c:
                    np.minimum(nearest_other, np.where(inside, distances[other], np.inf),
                               out=nearest_other)
    weights = 1.0 + w0 * np.exp(-(nearest_other.astype(np.float64) ** 2) / (2 * sigma**2))
    return weights.astype(np.float32)
