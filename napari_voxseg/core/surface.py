"""Surface distances between a prediction and a ground truth, in physical units.

The surface of a region is its voxels that touch the outside (6-connectivity: the region minus
its erosion by a cross, as MONAI's ``get_mask_edges`` takes it). Each surface voxel's distance
to the other region's surface comes from one Euclidean distance transform with the voxel size
as sampling (anisotropic voxels are measured right), computed in the bounding box of both
surfaces only, so a small object in a 512^3 volume costs what its box costs.

- HD95: the larger of the two directed 95th percentiles of those distances (MONAI's
  ``compute_hausdorff_distance(percentile=95)``);
- ASSD: the mean of all of them, both directions together (MONAI's
  ``compute_average_surface_distance(symmetric=True)``).

Empty sets: both empty, the distances are 0 ("both empty"); one empty, they are infinite and
the case is named ("prediction empty" or "ground truth empty").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import VoxSegError


@dataclass
class SurfaceScore:
    hd95: float
    assd: float
    note: str = ""  # "", "both empty", "prediction empty" or "ground truth empty"


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _spacing(voxel_size, ndim: int) -> tuple[float, ...]:
    spacing = (1.0,) * ndim if voxel_size is None else tuple(float(v) for v in voxel_size)
    if len(spacing) != ndim or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise VoxSegError(f"voxel size {voxel_size} must be {ndim} positive numbers")
    return spacing


def surface_distances(prediction: np.ndarray, truth: np.ndarray,
                      voxel_size: Sequence[float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The distance (in the units of ``voxel_size``, default voxels) from each surface voxel
    of the boolean ``prediction`` to the surface of ``truth``, and from each of ``truth``'s to
    ``prediction``'s. Both must be non-empty."""
    from scipy import ndimage

    pred, gt = np.asarray(prediction, dtype=bool), np.asarray(truth, dtype=bool)
    spacing = _spacing(voxel_size, pred.ndim)
    box = ndimage.find_objects((pred | gt).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)  # room for the erosion
    edges_p, edges_g = _surface(pred[box]), _surface(gt[box])
    to_g = ndimage.distance_transform_edt(~edges_g, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~edges_p, sampling=spacing)
    return to_g[edges_p], to_p[edges_g]


def surface_score(prediction: np.ndarray, truth: np.ndarray,
                  voxel_size: Sequence[float] | None = None) -> SurfaceScore:
    """HD95 and ASSD of two boolean masks (see the module for the empty cases)."""
    pred, gt = np.asarray(prediction, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != gt.shape:
        raise VoxSegError(f"prediction has shape {pred.shape} but the ground truth has shape "
                          f"{gt.shape}; compare labels of the same volume")
    has_p, has_g = bool(pred.any()), bool(gt.any())
    if not has_p and not has_g:
        return SurfaceScore(0.0, 0.0, "both empty")
    if not has_p or not has_g:
        return SurfaceScore(np.inf, np.inf, "prediction empty" if has_g else
                            "ground truth empty")
    to_g, to_p = surface_distances(pred, gt, voxel_size)
    hd95 = max(float(np.percentile(to_g, 95)), float(np.percentile(to_p, 95)))
    assd = float(np.concatenate([to_g, to_p]).mean())
    return SurfaceScore(hd95, assd)


def surface_per_class(prediction, truth, voxel_size=None, classes=None
                      ) -> dict[int, SurfaceScore]:
    """:func:`surface_score` per class (default: the ids > 0 in either volume)."""
    pred, gt = np.asarray(prediction), np.asarray(truth)
    if classes is None:
        classes = sorted(int(c) for c in np.union1d(np.unique(pred), np.unique(gt)) if c > 0)
    return {int(c): surface_score(pred == c, gt == c, voxel_size) for c in classes}
