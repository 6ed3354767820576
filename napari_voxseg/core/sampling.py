"""Training patches drawn mostly around strokes; flips, 90 degree turns, intensity jitter."""

from __future__ import annotations

from collections.abc import Sequence

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
    """Draws ``(image, labels)`` patches from one volume.

    ``image`` is float32 ``(C, Z, Y, X)`` (already normalized), ``labels`` integer ``(Z, Y, X)``
    (0 = not annotated). With probability ``stroke_fraction`` a patch is centred (with jitter)
    on an annotated voxel of a class chosen uniformly among the painted classes, so rare classes
    are seen as often as common ones; otherwise it is drawn uniformly.
    """

    def __init__(self, image: np.ndarray, labels: np.ndarray, patch_size: Sequence[int],
                 *, stroke_fraction: float = 0.9, augment: bool = True, seed: int | None = 0):
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise VoxSegError(f"patch size {patch_size} must be three positive sizes (Z, Y, X)")
        self.image = pad_to(image, self.patch_size, value=float(image.min()))
        self.labels = pad_to(labels, self.patch_size, value=0)
        self.stroke_fraction = stroke_fraction
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.update_labels(labels)

    def update_labels(self, labels: np.ndarray) -> None:
        """Use new strokes (e.g. painted while training) for the patches drawn from now on."""
        self.labels = pad_to(labels, self.patch_size, value=0)
        flat = self.labels.ravel()
        annotated = np.flatnonzero(flat)
        order = np.argsort(flat[annotated], kind="stable")
        annotated = annotated[order]
        classes, starts = np.unique(flat[annotated], return_index=True)
        self._by_class = np.split(annotated, starts[1:]) if classes.size else []
        self.annotated = int(annotated.size)

    def _corner(self) -> tuple[int, ...]:
        spatial = self.labels.shape
        highs = [n - p for n, p in zip(spatial, self.patch_size)]
        if self._by_class and self.rng.random() < self.stroke_fraction:
            voxels = self._by_class[self.rng.integers(len(self._by_class))]
            centre = np.unravel_index(voxels[self.rng.integers(voxels.size)], spatial)
            return tuple(
                int(np.clip(c - self.rng.integers(p), 0, h))
                for c, p, h in zip(centre, self.patch_size, highs)
            )
        return tuple(int(self.rng.integers(h + 1)) for h in highs)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One patch: image ``(C, *patch_size)`` float32, labels ``patch_size`` int64."""
        z, y, x = self._corner()
        pz, py, px = self.patch_size
        img = self.image[:, z : z + pz, y : y + py, x : x + px]
        lab = self.labels[z : z + pz, y : y + py, x : x + px]
        if self.augment:
            img, lab = self._augment(img, lab)
        return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(lab,
                                                                                 dtype=np.int64)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        patches = [self.sample() for _ in range(size)]
        return np.stack([p[0] for p in patches]), np.stack([p[1] for p in patches])

    def _augment(self, img: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        for axis in range(3):
            if rng.random() < 0.5:
                img, lab = np.flip(img, axis + 1), np.flip(lab, axis)
        turns = int(rng.integers(4)) if img.shape[-1] == img.shape[-2] else 2 * int(rng.integers(2))
        if turns:
            img, lab = np.rot90(img, turns, axes=(2, 3)), np.rot90(lab, turns, axes=(1, 2))
        # Intensity: a random contrast and brightness change, as between two acquisitions.
        gain = np.float32(rng.uniform(0.85, 1.15))
        offset = np.float32(rng.uniform(-0.1, 0.1))
        return img * gain + offset, lab
