"""Stage 1: an instant per-voxel classifier on the filter bank (:mod:`.features`): a random
forest (scikit-learn's, stored as arrays and predicted in torch, :mod:`.forest`) and a small MLP
in torch (:mod:`.mlp`), their probabilities averaged. The forest is the better one where classes
are told apart by intensity, the MLP where size and thin structures matter, their mean the best
on most cases (benchmarks/stage1_classifiers.py).

    model = fit_stage1(image, strokes, voxel_size)     # (C, Z, Y, X), strokes 0..K
    probs = model.predict_proba(image)                 # (K, Z, Y, X) float32, block by block
    save_file(model.state_dict(), path, metadata={"stage1": json.dumps(model.metadata())})
    model = Stage1.from_state(load_file(path), json.loads(metadata["stage1"]))

``strokes`` are (Z, Y, X) integers, 0 = not annotated and 1..K = classes; probability K - 1 is
class K. Fitting needs scikit-learn (for the forest); loading and predicting need only torch.
The MLP alone (``fit``, ``predict_proba``, ``predict_image`` on a parameter dict) is
re-exported from :mod:`.mlp`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import cast

import numpy as np
import torch

from .errors import VoxSegError, check_stop
from .features import DEFAULT_SCALES, default_bounds, feature_block, feature_names
from .forest import Forest, ForestConfig, fit_forest
from .mlp import (  # noqa: F401  (the MLP's API, re-exported)
    Stage1Config,
    _layers,
    _sample_voxels,
    _stroke_voxels,
    check_classes,
    cpu_threads,
    fit,
    fit_voxels,
    predict_image,
    predict_labels,
    predict_proba,
)
from .tiles import concrete

FORMAT = "voxseg-stage1"
VERSION = 1
_BLOCK = (64, 128, 128)
STOPPED_FITTING = ("stopped while stage 1 read the strokes, before training began; no model was "
                   "made and nothing was changed")
STOPPED_PREDICTING = ("stopped while stage 1 predicted the volume, before training began; no "
                      "model was made and nothing was changed")
_SAMPLE = 1 << 16  # voxels for the MLP's feature standardization, as mlp.fit takes
# The forest's share when no strokes can be held out to choose it: 0.7 keeps the forest's
# accuracy on intensity-defined classes (real MRI) and most of the MLP's gain on shapes
# (benchmarks/stage1_classifiers.py, methods mix:W).
DEFAULT_FOREST_WEIGHT = 0.7
# Trees of the first overlay's forest (shown for the seconds the whole stage 1 takes): half
# the time of 100 for the same Dice on the sample (0.958 / 0.927 against 0.961 / 0.918).
QUICK_TREES = 50


@dataclass(eq=False)
class Stage1:
    """The fitted stage 1: the filter bank's settings, a random forest (as arrays, see
    :mod:`.forest`) and the MLP; its probabilities are the mean of theirs. Store it with
    ``save_file(s.state_dict(), path, metadata={"stage1": json.dumps(s.metadata())})`` and
    rebuild it with :meth:`from_state` (safetensors and JSON: no pickle, no scikit-learn)."""

    forest: Forest
    mlp: dict[str, torch.Tensor]  # as :func:`fit` returns them
    num_classes: int
    channels: int
    scales: tuple[float, ...]
    voxel_size: tuple[float, float, float] | None
    # The forest's share of the probabilities (the MLP's is the rest); in training, chosen on
    # held-out strokes (two_stage.choose_forest_weight).
    forest_weight: float = DEFAULT_FOREST_WEIGHT

    @staticmethod
    def bounds_of(image) -> np.ndarray:
        """How stage 1 normalizes ``image`` (C, Z, Y, X): compute it once and pass it to
        :meth:`predict_proba` when predicting an image block by block."""
        return default_bounds(image)

    def predict_proba(self, image, region: Sequence[slice] | None = None, *,
                      voxel_size: Sequence[float] | None = None, bounds: np.ndarray | None = None,
                      device: str | torch.device = "cpu", block: Sequence[int] = _BLOCK,
                      threads: int | None = 1, out=None, should_stop=None) -> np.ndarray:
        """Probabilities (K, z, y, x) float32 of ``region`` (default: all) of a ``(C, Z, Y,
        X)`` image (numpy, memmap, zarr), block by block, each block's features read with
        their halo: memory holds one block's features whatever the volume's size.

        ``voxel_size``: the image's (default: the training image's). ``bounds``: its
        normalization (default: :meth:`bounds_of` the image; pass them to
        predict several regions of one volume). ``threads``: see :func:`cpu_threads`.
        ``out``: where to write (e.g. a zarr array), by default a new numpy array.
        ``should_stop()``, polled before each block: true raises :class:`StoppedEarly`."""
        mlp = {key: value.to(device) for key, value in self.mlp.items()}
        return predict_blockwise(self, lambda feats: self.predict_features(feats, mlp), image,
                                 region, voxel_size=voxel_size, bounds=bounds, device=device,
                                 block=block, threads=threads, out=out,
                                 should_stop=should_stop)

    def predict_features(self, features: torch.Tensor,
                         mlp: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Probabilities (K, Z, Y, X) of features (F, Z, Y, X), on their device."""
        mlp = self.mlp if mlp is None else mlp
        flat = features.reshape(features.shape[0], -1).t()
        forest = self.forest.predict_proba(flat).t().reshape(-1, *features.shape[1:])
        if not self.has_mlp:  # a quick stage 1 (fit_stage1(..., quick=True)): the forest alone
            return forest.contiguous()
        w = self.forest_weight
        return predict_proba(mlp, features).mul_(1 - w).add_(forest.mul_(w))

    @property
    def has_mlp(self) -> bool:
        """False for a quick stage 1, the forest alone (the first overlay; never saved)."""
        return "mean" in self.mlp

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The arrays: ``forest.*`` (see :meth:`.Forest.state_dict`) and ``mlp.*``."""
        state = {f"forest.{k}": v for k, v in self.forest.state_dict().items()}
        state.update({f"mlp.{k}": v.detach().cpu().contiguous() for k, v in self.mlp.items()
                      if k not in ("scales", "channels")})
        return state

    def metadata(self) -> dict:
        """The settings, JSON-able (safetensors metadata holds strings: ``json.dumps`` it)."""
        return {"format": FORMAT, "version": VERSION, "num_classes": self.num_classes,
                "channels": self.channels, "scales": list(self.scales),
                "voxel_size": None if self.voxel_size is None else list(self.voxel_size),
                "features": feature_names(self.channels, self.scales),
                "forest": {"trees": int(self.forest.feature.shape[0]),
                           "max_nodes": int(self.forest.feature.shape[1]),
                           "depth": self.forest.depth},
                "mlp": {"layers": len(_layers(self.mlp))},
                "forest_weight": self.forest_weight,
                "combine": "forest_weight x the forest's probabilities + the rest x the MLP's"}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], metadata: dict) -> Stage1:
        """Rebuild from :meth:`state_dict` and :meth:`metadata` (as dict or JSON string)."""
        try:
            meta = json.loads(metadata) if isinstance(metadata, str) else dict(metadata)
            if meta.get("format") != FORMAT or int(meta.get("version", 0)) > VERSION:
                raise ValueError(f"format {meta.get('format')} {meta.get('version')}")
            k, channels = int(meta["num_classes"]), int(meta["channels"])
            scales = tuple(float(s) for s in meta["scales"])
            voxel = meta["voxel_size"]
            voxel = None if voxel is None else tuple(float(v) for v in voxel)
            weight = float(meta.get("forest_weight", 0.5))  # before it was stored: the mean
            if not 0 <= weight <= 1:
                raise ValueError(f"forest_weight {weight}")
        except (ValueError, TypeError, KeyError) as error:
            raise VoxSegError(f"the stage-1 settings are not a voxseg stage 1 of version "
                              f"{VERSION} or older ({error}); save it again") from None
        forest = Forest.from_state({key[7:]: v for key, v in state.items()
                                    if key.startswith("forest.")})
        mlp = {key[4:]: v.float() for key, v in state.items() if key.startswith("mlp.")}
        n = len(feature_names(channels, scales))
        try:
            layers = _layers(mlp)
            sizes = [n] + [len(bias) for _, bias in layers]
            shapes_ok = (layers and mlp["mean"].shape == mlp["std"].shape == (n,)
                         and sizes[-1] == k and all(
                             tuple(w.shape) == (sizes[i + 1], sizes[i]) and b.ndim == 1
                             for i, (w, b) in enumerate(layers)))
        except (KeyError, TypeError):
            shapes_ok = False
        if not shapes_ok or forest.num_classes != k or forest.num_features > n:
            raise VoxSegError(f"the stage-1 arrays do not match its settings ({k} classes, "
                              f"{n} features); the model file is damaged, save it again")
        mlp["scales"] = torch.tensor(scales, dtype=torch.float64)
        mlp["channels"] = torch.tensor([channels])
        return cls(forest, mlp, k, channels, scales, voxel, weight)


def predict_blockwise(model, predict, image, region: Sequence[slice] | None = None, *,
                      voxel_size=None, bounds: np.ndarray | None = None,
                      device: str | torch.device = "cpu", block: Sequence[int] = _BLOCK,
                      threads: int | None = 1, out=None, should_stop=None) -> np.ndarray:
    """What every stage 1 predicts, block by block: ``predict(features)`` gives a block's
    (K, z, y, x) tensor from its features (F, z, y, x); ``model`` says the filter bank and K
    (``channels``, ``scales``, ``voxel_size``, ``num_classes``). The other arguments as
    :meth:`Stage1.predict_proba` takes them."""
    image = _as_image(image, model.channels)
    region = concrete(region, image.shape[1:])
    voxel_size = model.voxel_size if voxel_size is None else voxel_size
    if bounds is None:
        bounds = default_bounds(image)
    shape = tuple(r.stop - r.start for r in region)
    if out is None:
        out = np.empty((model.num_classes, *shape), dtype=np.float32)
    with cpu_threads(threads, device):
        for start, stop in _grid([r.start for r in region], [r.stop for r in region], block):
            check_stop(should_stop, STOPPED_PREDICTING)
            feats = feature_block(image, start, stop, voxel_size=voxel_size,
                                  scales=model.scales, bounds=bounds, device=device)
            where = (slice(None), *(slice(a - r.start, b - r.start)
                                    for a, b, r in zip(start, stop, region)))
            out[where] = predict(feats).cpu().numpy()
    return out


def fit_stage1(image, strokes, voxel_size: Sequence[float] | None = None, *, seed: int = 0,
               num_classes: int | None = None, scales: Sequence[float] = DEFAULT_SCALES,
               mlp: Stage1Config | None = None, forest: ForestConfig | None = None,
               device: str | torch.device = "cpu", block: Sequence[int] = _BLOCK,
               threads: int | None = 1, quick: bool = False,
               bounds: np.ndarray | None = None, should_stop=None) -> Stage1:
    """Fit stage 1 on the strokes (Z, Y, X; 0 = not annotated, 1..K = classes) of a ``(C, Z,
    Y, X)`` image (or ``(Z, Y, X)``): the features of the blocks that hold strokes are computed
    (with their halo), then the forest (in scikit-learn's threads, one per core) and the MLP
    fit at the same time on the stroke voxels. ``seed`` seeds both; ``mlp``/``forest``: their
    settings (their seeds replaced by ``seed``). ``threads``: torch's CPU threads for the
    filters (see :func:`cpu_threads`; the MLP trains with ``mlp.threads``). ``quick``: the
    forest alone (about a second on the sample, the MLP takes a few: the first overlay while
    the whole stage 1 fits; not for saving). ``bounds``: the image's normalization, when
    already known (:meth:`Stage1.bounds_of`). ``should_stop()``, polled before each block's
    features: true raises :class:`StoppedEarly`. Fitting needs scikit-learn; predicting does
    not."""
    image = _as_image(image)
    strokes = np.asarray(strokes)
    if strokes.shape != image.shape[1:] or not np.issubdtype(strokes.dtype, np.integer):
        raise VoxSegError(f"the strokes are {strokes.dtype} of shape {strokes.shape}; give "
                          f"integers (0 = none, 1..K = classes) of the image's shape "
                          f"{tuple(image.shape[1:])}")
    if strokes.size and strokes.min() < 0:
        raise VoxSegError("the strokes hold negative values; use 0 for unannotated voxels and "
                          "1..K for classes")
    scales = tuple(float(s) for s in scales)
    painted = (_stroke_boxes(strokes) if quick else None) or [
        (a, b) for a, b in _grid((0, 0, 0), image.shape[1:], block)
        if strokes[tuple(map(slice, a, b))].any()]
    if not painted:
        raise VoxSegError("there are no strokes; paint at least two classes before training")
    bounds = default_bounds(image) if bounds is None else bounds
    generator = torch.Generator().manual_seed(seed)
    total = sum(np.prod(np.subtract(b, a)) for a, b in painted)
    xs, ys, samples = [], [], []
    with cpu_threads(threads, device):
        for start, stop in painted:
            check_stop(should_stop, STOPPED_FITTING)
            feats = feature_block(image, start, stop, voxel_size=voxel_size, scales=scales,
                                  bounds=bounds, device=device)
            x, y = _stroke_voxels(feats, strokes[tuple(map(slice, start, stop))])
            xs.append(x)
            ys.append(y)
            # The voxels the MLP's standardization is taken from, spread over the blocks.
            share = int(np.ceil(_SAMPLE * np.prod(np.subtract(stop, start)) / total))
            samples.append(_sample_voxels(feats, share, generator))
        x, y = torch.cat(xs), torch.cat(ys)
        _, k = check_classes(y, num_classes)
        if quick:
            trees = fit_forest(x, y, num_classes=k,
                               config=replace(forest or ForestConfig(), seed=seed))
            return Stage1(trees, {}, k, image.shape[0], scales, _voxel(voxel_size))
        with ThreadPoolExecutor(1) as pool:
            fitting = pool.submit(fit_forest, x, y, num_classes=k,
                                  config=replace(forest or ForestConfig(), seed=seed))
            params = fit_voxels(x, y, torch.cat(samples), num_classes=k,
                                config=replace(mlp or Stage1Config(), seed=seed),
                                generator=generator)
            trees = fitting.result()
    params = {key: value.cpu() for key, value in params.items()}  # kept on the CPU
    params["scales"] = torch.tensor(scales, dtype=torch.float64)
    params["channels"] = torch.tensor([image.shape[0]])
    return Stage1(trees, params, k, image.shape[0], scales, _voxel(voxel_size))


def _stroke_boxes(strokes: np.ndarray, most: int = 16) -> list | None:
    """Per painted slice, the box around its strokes (one slice deep): where a quick fit
    computes features (with their halo), a fraction of the 64-slice blocks a stroke touches.
    None when more than ``most`` slices are painted."""
    slices = np.flatnonzero(strokes.reshape(strokes.shape[0], -1).any(axis=1))
    if slices.size > most:
        return None
    from .validation import bounding_box

    boxes = []
    for z in slices:
        box = bounding_box(strokes[z])
        assert box is not None  # a painted slice
        ys, xs = box
        boxes.append(((int(z), ys.start, xs.start), (int(z) + 1, ys.stop, xs.stop)))
    return boxes


def quick_overlay(image, strokes, voxel_size: Sequence[float] | None = None, *, seed: int = 0,
                  num_classes: int | None = None, scales: Sequence[float] = DEFAULT_SCALES,
                  budget: int = 256 << 20, region: Sequence[slice] | None = None) -> np.ndarray:
    """The first overlay: the probabilities (K, Z, Y, X) of a forest alone (a quick stage 1,
    :data:`QUICK_TREES` trees) fitted on the strokes. When the whole volume's features fit in
    ``budget`` bytes they are computed once, for fitting and predicting (0.7 s on the
    48x96x96 sample on one thread); else, or when ``region`` (three slices) is given, the
    forest is fitted on the features of the painted slices alone and predicts block by block,
    only ``region`` when given (the probabilities are then those of the region).
    Multi-label ``strokes`` (K, Z, Y, X; per class 0 = none, 1 = absent, 2 = present): one
    forest per class, the probabilities those of 'present'."""
    image = _as_image(image)
    strokes = np.asarray(strokes)
    layers = list(strokes) if strokes.ndim == 4 else [strokes]
    k_given = 2 if strokes.ndim == 4 else num_classes  # a multi-label layer: absent, present
    scales = tuple(float(s) for s in scales)
    count = len(feature_names(image.shape[0], scales))
    if region is not None or count * 4 * int(np.prod(image.shape[1:])) > budget:
        bounds = default_bounds(image)
        depth = None if region is None else region[0].stop - region[0].start
        block = _BLOCK if depth is None or depth > 4 else (depth, 1024, 1024)  # a thin slab
        probs = [fit_stage1(image, layer, voxel_size, seed=seed, scales=scales, quick=True,
                            num_classes=k_given, forest=ForestConfig(trees=QUICK_TREES),
                            bounds=bounds).predict_proba(image, region, bounds=bounds,
                                                         block=block)
                 for layer in layers]
    else:
        features = feature_block(image, (0, 0, 0), image.shape[1:], voxel_size=voxel_size,
                                 scales=scales, bounds=default_bounds(image))
        flat = features.reshape(count, -1).t()
        probs = []
        for layer in layers:
            x, y = _stroke_voxels(features, layer)
            _, k = check_classes(y, k_given)
            trees = fit_forest(x, y, num_classes=k,
                               config=ForestConfig(seed=seed, trees=QUICK_TREES))
            probs.append(trees.predict_proba(flat).t().reshape(k, *image.shape[1:]).numpy())
    if strokes.ndim == 4:
        return np.stack([p[1] for p in probs])
    return probs[0]


def _voxel(voxel_size) -> tuple[float, float, float] | None:
    return None if voxel_size is None else cast(tuple[float, float, float],
                                                 tuple(float(v) for v in voxel_size))


def _as_image(image, channels: int | None = None):
    """A (C, Z, Y, X) array-like, checked; a (Z, Y, X) one gets a channel axis (lazily:
    a zarr array is still read block by block)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if len(image.shape) == 3:
        image = image[None] if isinstance(image, np.ndarray) else _OneChannel(image)
    if len(image.shape) != 4 or (channels is not None and image.shape[0] != channels):
        want = f"({channels}, Z, Y, X)" if channels else "(C, Z, Y, X) or (Z, Y, X)"
        raise VoxSegError(f"the image has shape {tuple(image.shape)}; stage 1 needs {want}")
    return image


class _OneChannel:
    """A (Z, Y, X) array-like read as (1, Z, Y, X), for the block readers."""

    def __init__(self, array):
        self.array, self.shape = array, (1, *array.shape)

    def __getitem__(self, key):
        return np.asarray(self.array[key[1:]])[None]


def _grid(start: Sequence[int], stop: Sequence[int], block: Sequence[int]):
    """``(start, stop)`` of the blocks (at most ``block`` voxels a side) tiling a box."""
    for z in range(start[0], stop[0], block[0]):
        for y in range(start[1], stop[1], block[1]):
            for x in range(start[2], stop[2], block[2]):
                a = (z, y, x)
                yield a, tuple(min(i + b, s) for i, b, s in zip(a, block, stop))
