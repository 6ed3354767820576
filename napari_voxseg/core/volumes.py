"""Training on several volumes: the (image, strokes) pairs laid side by side on one canvas, so
that everything a run does on one volume (stage 1's filters and forest, held-out strokes,
patches drawn around strokes, the U-Net) does it on all of them at once.

    canvas = gather([(image_a, strokes_a), (image_b, strokes_b)], [(2, 1, 1), (1, 1, 1)])
    train(canvas.image, canvas.labels, config, voxel_size=canvas.voxel_size)

How the pairs are laid out, and why it is sound:

- **Voxel size.** The network learns at one voxel size: every pair is resampled to the first
  pair's (the image trilinear, the strokes by nearest neighbour), as nnU-Net resamples to one
  target spacing; the run says so in a note. Prediction then takes each volume at its own
  voxel size (``--resample`` / ``resample=True`` predicts at the model's and back).
- **Intensities.** Each image is normalized on its own (its percentiles, as prediction
  normalizes every image it is given) before it is placed; the run's own normalization of the
  canvas is then close to the identity.
- **Layout.** Side by side along X, aligned at Z = 0 and Y = 0, with :data:`GAP` voxels of
  zeros between neighbours and around the smaller ones; strokes there are 0 (not annotated),
  so no loss sees the padding. The gap is wider than the filters' reach (3 sigma of the
  largest scale), so no voxel's features mix two volumes; a U-Net patch that meets a gap sees
  zeros, as at a volume's edge. Patches are drawn around strokes, so each pair is drawn from
  in proportion to its strokes. Thin stacks stay thin: the canvas is as deep as the deepest
  pair, so a set of 2D images still trains the 2D network.

Memory: one float32 copy of every pair (at the common voxel size) plus the gaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np
import torch

from .data import DEFAULT_PERCENTILES, check_image, normalize
from .errors import VoxSegError
from .events import PreviewEvent

GAP = 16  # voxels of zeros between volumes (the largest filter scale, 5, reaches 15)


@dataclass
class Canvas:
    image: np.ndarray  # (C, Z, Y, X) float32, each pair normalized on its own
    labels: np.ndarray  # (Z, Y, X) or (K, Z, Y, X): the strokes, 0 in the gaps
    voxel_size: tuple | None
    regions: list = field(default_factory=list)  # each pair's (Z, Y, X) slices on the canvas
    notes: list = field(default_factory=list)

    def follow(self, get_labels):
        """``get_labels`` (each pair's newer strokes, a list, or None) as the training loop
        asks for them: the canvas's strokes, or None."""
        if get_labels is None:
            return None

        def canvas_strokes():
            fresh = get_labels()
            return None if fresh is None else self.place(fresh)

        return canvas_strokes

    def first_pair_only(self, events):
        """Pass on the training loop's events, its previews cropped to the first pair (which
        lies at the canvas's origin: its regions and the canvas's are the same); return what
        the loop returns."""
        first = self.regions[0]
        while True:
            try:
                event = next(events)
            except StopIteration as done:
                return done.value
            if isinstance(event, PreviewEvent):
                event = _cropped(event, first)
                if event is None:
                    continue
            yield event

    def place(self, strokes: Sequence) -> np.ndarray:
        """New canvas strokes from each pair's strokes (as painted, at the pair's own voxel
        size: resampled as :func:`gather` resampled them)."""
        out = np.zeros_like(self.labels)
        for region, labels in zip(self.regions, strokes):
            labels = np.asarray(labels)
            shape = tuple(r.stop - r.start for r in region)
            if tuple(labels.shape[-3:]) != shape:
                labels = resample_strokes(labels, shape)
            out[(..., *region)] = labels
        return out


def _cropped(event: PreviewEvent, region) -> PreviewEvent | None:
    """``event`` with its region and results cut to ``region`` (None when outside it)."""
    inner = cast(tuple[slice, slice, slice],
                 tuple(slice(max(a.start, b.start), min(a.stop, b.stop))
                       for a, b in zip(event.region, region)))
    if any(s.stop <= s.start for s in inner):
        return None
    if inner == tuple(event.region):
        return event
    local = (..., *(slice(s.start - a.start, s.stop - a.start)
                    for s, a in zip(inner, event.region)))
    result = event.result
    parts = {name: getattr(result, name)[local] for name in ("labels", "probabilities",
                                                              "values", "uncertainty")
             if getattr(result, name, None) is not None}
    return replace(event, region=inner, result=replace(result, **parts))


def resample_strokes(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Strokes (..., Z, Y, X) at the spatial ``shape``: each new voxel takes the largest label
    of the old voxels it covers (nearest when enlarging), so a stroke one slice thin is kept
    when the slices get thicker."""
    strokes = labels
    for axis, (n, m) in enumerate(zip(labels.shape[-3:], shape)):
        starts = np.floor(np.arange(m) * n / m).astype(np.intp)
        strokes = np.maximum.reduceat(strokes, starts, axis=labels.ndim - 3 + axis)
    return strokes


def _stack(labels, task: str) -> np.ndarray:
    if task == "multilabel" and isinstance(labels, (list, tuple)):
        return np.stack([np.asarray(v) for v in labels])
    return np.asarray(labels)


def _checked(pairs, voxel_sizes, task: str):
    """Each pair as (float32 (C, Z, Y, X) image, labels array, voxel size); one line when
    they do not fit together."""
    if task == "regression":
        raise VoxSegError("several volumes train multi-class or multi-label tasks; a "
                          "regression target trains on one volume")
    if len(pairs) == 0:
        raise VoxSegError("no (image, labels) pair given")
    if voxel_sizes is None or (len(voxel_sizes) == 3 and not isinstance(
            voxel_sizes[0], (list, tuple, type(None)))):
        voxel_sizes = [voxel_sizes] * len(pairs)
    if len(voxel_sizes) != len(pairs):
        raise VoxSegError(f"{len(voxel_sizes)} voxel sizes for {len(pairs)} pairs; give one "
                          "per pair (or one for all)")
    checked, channels = [], None
    for i, (pair, voxel) in enumerate(zip(pairs, voxel_sizes), start=1):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise VoxSegError(f"pair {i} is not (image, labels); give a list of "
                              "(image, labels) pairs")
        image = check_image(pair[0], name=f"the image of pair {i}")
        labels = _stack(pair[1], task)
        if channels is not None and image.shape[0] != channels:
            raise VoxSegError(f"pair {i}'s image has {image.shape[0]} channel(s) and pair 1's "
                              f"{channels}; every image of a set needs the same channels")
        channels = image.shape[0]
        if tuple(labels.shape[-3:]) != tuple(image.shape[1:]):
            raise VoxSegError(f"pair {i}: labels {tuple(labels.shape)} do not match its image "
                              f"{tuple(image.shape[1:])} (Z, Y, X); strokes are painted on "
                              "their own image")
        checked.append((image, labels, None if voxel is None else tuple(map(float, voxel))))
    if len({lab.shape[:-3] for _, lab, _ in checked}) > 1:
        raise VoxSegError("the pairs have different numbers of class layers; every pair of a "
                          "multi-label set has one layer per class")
    return checked


def _resampled(image, labels, voxel, target, index: int, notes: list):
    """``image`` and ``labels`` at the ``target`` voxel size."""
    if voxel is None or target is None or np.allclose(voxel, target, rtol=0.01):
        return image, labels
    shape = tuple(max(1, int(round(n * v / t))) for n, v, t in zip(image.shape[1:], voxel,
                                                                     target))
    from .resample import resize

    image = resize(torch.from_numpy(np.ascontiguousarray(image)), shape).numpy()
    strokes = resample_strokes(labels, shape)
    notes.append(f"pair {index} resampled from voxel size {'x'.join(f'{v:g}' for v in voxel)} "
                 f"to {'x'.join(f'{v:g}' for v in target)} (the first pair's that has one), "
                 f"{shape}; its strokes: {np.count_nonzero(labels)} voxels, then "
                 f"{np.count_nonzero(strokes)}")
    return image, strokes


def gather(pairs: Sequence, voxel_sizes=None, *, task: str = "multiclass",
           percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> Canvas:
    """The :class:`Canvas` of ``pairs`` ((image, labels) each: image (Z, Y, X) or (C, Z, Y,
    X), labels as :func:`~.train.iter_train` takes them for ``task``). ``voxel_sizes``: one
    per pair, or one for all, or None."""
    checked = _checked(list(pairs), voxel_sizes, task)
    target = next((v for _, _, v in checked if v is not None), None)
    notes: list[str] = []
    placed = []
    for i, (image, labels, voxel) in enumerate(checked, start=1):
        image, labels = _resampled(image, labels, voxel, target, i, notes)
        placed.append((normalize(image, *percentiles), labels))
    depth = max(im.shape[1] for im, _ in placed)
    height = max(im.shape[2] for im, _ in placed)
    width = sum(im.shape[3] for im, _ in placed) + GAP * (len(placed) - 1)
    first = placed[0][1]
    canvas = np.zeros((placed[0][0].shape[0], depth, height, width), np.float32)
    strokes = np.zeros((*first.shape[:-3], depth, height, width),
                       np.result_type(*[labels.dtype for _, labels in placed]))
    regions, x = [], 0
    for image, labels in placed:
        z, y, w = image.shape[1:]
        region = (slice(0, z), slice(0, y), slice(x, x + w))
        canvas[(slice(None), *region)] = image
        strokes[(..., *region)] = labels
        regions.append(region)
        x += w + GAP
    return Canvas(canvas, strokes, target, regions, notes)
