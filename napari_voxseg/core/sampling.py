"""Training patches drawn mostly around strokes; flips, 90 degree turns, intensity jitter."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import cast

import numpy as np

from .errors import VoxSegError


def pad_to(array: np.ndarray, shape: Sequence[int], value=0) -> np.ndarray:
    """Pad the trailing axes of ``array`` at their end up to ``shape`` (no-op when large enough)."""
    lead = array.ndim - len(shape)
    pads = [(0, 0)] * lead + [(0, max(0, s - n)) for s, n in zip(shape, array.shape[lead:])]
    if not any(p[1] for p in pads):
        return array
    return np.pad(array, pads, mode="constant", constant_values=value)


class PatchSampler:
    """Draws ``(image, target, voxel weights)`` patches from one volume.

    ``image`` is float32 ``(C, Z, Y, X)`` (already normalized); ``target`` has the image's spatial
    shape as its trailing axes (``(Z, Y, X)`` labels, ``(K, Z, Y, X)`` multi-label annotations or
    ``(1, Z, Y, X)`` regression values). ``strata`` is an int ``(Z, Y, X)`` map, 0 where nothing is
    annotated (default: ``target`` itself). With probability ``stroke_fraction`` a patch is centred
    (with jitter) on an annotated voxel of a stratum chosen uniformly among those present, so
    rare classes are seen as often as common ones; otherwise it is drawn uniformly.
    ``voxel_weights``, optional ``(Z, Y, X)`` float, are cut and turned with the patch.
    ``fill`` is the target's "not annotated" value, used where a small volume is padded.
    ``intensity_channels``: how many leading image channels are intensities that the
    augmentation changes in contrast and brightness (default all; a first stage's
    probabilities after them are only flipped and turned).
    """

    def __init__(self, image: np.ndarray, target: np.ndarray, patch_size: Sequence[int],
                 *, strata: np.ndarray | None = None, voxel_weights: np.ndarray | None = None,
                 fill: float = 0, stroke_fraction: float = 0.9, augment: bool = True,
                 seed: int | None = 0, intensity_channels: int | None = None):
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise VoxSegError(f"patch size {patch_size} must be three positive sizes (Z, Y, X)")
        self.image = pad_to(image, self.patch_size, value=float(image.min()))
        self.fill = fill
        self.stroke_fraction = stroke_fraction
        self.augment = augment
        self.intensity_channels = intensity_channels
        self.rng = np.random.default_rng(seed)
        self.update_labels(target, strata=strata, voxel_weights=voxel_weights)

    def resized(self, patch_size: Sequence[int]) -> PatchSampler:
        """The same sampler (data, labels, random state) drawing patches of another size."""
        other = copy.copy(self)
        other.patch_size = tuple(int(p) for p in patch_size)
        other.rng = copy.deepcopy(self.rng)
        return other

    def update_labels(self, target: np.ndarray, *, strata: np.ndarray | None = None,
                      voxel_weights: np.ndarray | None = None) -> None:
        """Use new strokes (e.g. painted while training) for the patches drawn from now on."""
        self.labels = pad_to(target, self.patch_size, value=self.fill)
        self.voxel_weights = None if voxel_weights is None else pad_to(
            voxel_weights.astype(np.float32, copy=False), self.patch_size, value=0)
        strata = target if strata is None else strata
        flat = pad_to(strata, self.patch_size, value=0).ravel()
        self._spatial = self.labels.shape[-3:]
        annotated = np.flatnonzero(flat)
        order = np.argsort(flat[annotated], kind="stable")
        annotated = annotated[order]
        classes, starts = np.unique(flat[annotated], return_index=True)
        self._by_class = np.split(annotated, starts[1:]) if classes.size else []
        self.annotated = int(annotated.size)

    def _corner(self) -> tuple[int, ...]:
        spatial = self._spatial
        highs = [n - p for n, p in zip(spatial, self.patch_size)]
        if self._by_class and self.rng.random() < self.stroke_fraction:
            voxels = self._by_class[self.rng.integers(len(self._by_class))]
            centre = np.unravel_index(voxels[self.rng.integers(voxels.size)], spatial)
            return tuple(
                int(np.clip(c - self.rng.integers(p), 0, h))
                for c, p, h in zip(centre, self.patch_size, highs)
            )
        return tuple(int(self.rng.integers(h + 1)) for h in highs)

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One patch: image ``(C, *patch_size)`` float32, the target's patch (int64 for labels,
        float32 for regression) and the voxel weights' patch (or None)."""
        z, y, x = self._corner()
        pz, py, px = self.patch_size
        window = (Ellipsis, slice(z, z + pz), slice(y, y + py), slice(x, x + px))
        img = self.image[window]
        lab = self.labels[window]
        weights = None if self.voxel_weights is None else self.voxel_weights[window]
        if self.augment:
            img, lab, weights = self._augment(img, lab, weights)
        dtype = np.float32 if lab.dtype.kind == "f" else np.int64
        return (np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(lab, dtype=dtype),
                None if weights is None else np.ascontiguousarray(weights))

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        patches = [self.sample() for _ in range(size)]
        # All patches have voxel weights, or none do (the sampler's).
        weights = (None if patches[0][2] is None else
                   np.stack([cast(np.ndarray, p[2]) for p in patches]))
        return np.stack([p[0] for p in patches]), np.stack([p[1] for p in patches]), weights

    def _augment(self, img, lab, weights):
        rng = self.rng
        arrays = [img, lab] + ([] if weights is None else [weights])
        for axis in (-3, -2, -1):
            if rng.random() < 0.5:
                arrays = [np.flip(a, axis) for a in arrays]
        square = img.shape[-1] == img.shape[-2]
        turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
        if turns:
            arrays = [np.rot90(a, turns, axes=(-2, -1)) for a in arrays]
        img, lab = arrays[0], arrays[1]
        weights = arrays[2] if weights is not None else None
        # Intensity: a random contrast and brightness change, as between two acquisitions.
        gain = np.float32(rng.uniform(0.85, 1.15))
        offset = np.float32(rng.uniform(-0.1, 0.1))
        img = np.array(img, dtype=np.float32)  # a copy: the flips and turns are views
        n = self.intensity_channels
        img[:n] = img[:n] * gain + offset
        return img, lab, weights
