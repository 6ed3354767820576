"""A small per-voxel MLP in torch on the filter bank: half of stage 1 (see :mod:`.stage1`).

    feats = feature_bank(image, voxel_size)                  # (F, Z, Y, X), see .features
    params = fit(feats, strokes)                             # about a second on a CPU
    probs = predict_proba(params, feats)                     # (K, Z, Y, X) float32
    probs = predict_image(params, big_image, voxel_size)     # block by block, any size

``strokes`` are (Z, Y, X) integers, 0 = not annotated and 1..K = classes. Training samples the
same number of stroke voxels of every painted class at each step (class-balanced), so a class
painted with a few voxels weighs as much as a background painted with thousands.

The fitted classifier is a plain ``dict[str, torch.Tensor]`` (weights, the feature
standardization and the filter bank's scales): it can be stored with safetensors, no pickle.
Probability K - 1 of the output is class K (classes never painted get no probability).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import VoxSegError
from .features import DEFAULT_SCALES, default_bounds, feature_names, iter_feature_blocks

_PREDICT_CHUNK = 1 << 18


@dataclass(frozen=True)
class Stage1Config:
    hidden: tuple[int, ...] = (64, 64)
    steps: int = 400
    batch: int = 2048  # voxels per step, spread evenly over the painted classes
    lr: float = 3e-3
    weight_decay: float = 1e-4
    noise: float = 0.3  # Gaussian noise on the standardized features while training
    # Mixup of stroke voxels (weights drawn from Beta(mixup, mixup)) with mixed targets, 0 =
    # off. Strokes lie inside regions, so the voxels between classes are never painted;
    # mixup puts the decision midway between the classes rather than against the tighter
    # one (real MRI: grey/white matter Dice 0.80 -> 0.85 on line strokes).
    mixup: float = 1.0
    max_seconds: float | None = None  # stop earlier when this much time has passed
    seed: int = 0
    # CPU threads while training: its steps are too small to gain from more, and on a busy
    # CPU (the U-Net training beside it) every extra thread makes each step wait.
    threads: int | None = 1


def _layers(params: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    n = sum(1 for k in params if k.endswith(".weight"))
    return [(params[f"layer{i}.weight"], params[f"layer{i}.bias"]) for i in range(n)]


def _forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits (N, K) of standardized features (N, F)."""
    layers = _layers(params)
    for i, (w, b) in enumerate(layers):
        x = torch.addmm(b, x, w.t())
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x


def _transform(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Features (N, F) standardized as the network takes them."""
    return (x - params["mean"]) / params["std"]


def _stroke_voxels(features: torch.Tensor, strokes) -> tuple[torch.Tensor, torch.Tensor]:
    strokes = torch.as_tensor(np.asarray(strokes)).to(torch.int64)
    if tuple(strokes.shape) != tuple(features.shape[1:]):
        raise VoxSegError(f"strokes have shape {tuple(strokes.shape)} but the features cover "
                          f"{tuple(features.shape[1:])}; give strokes of the same volume")
    where = torch.nonzero(strokes.reshape(-1) > 0).squeeze(1).to(features.device)
    x = features.reshape(features.shape[0], -1)[:, where].t().float()
    return x, strokes.reshape(-1)[where.cpu()]


def fit(features: torch.Tensor, strokes, *, num_classes: int | None = None,
        config: Stage1Config = Stage1Config(), scales: Sequence[float] = DEFAULT_SCALES,
        channels: int | None = None) -> dict[str, torch.Tensor]:
    """Train the per-voxel MLP on the stroke voxels of ``features`` (F, Z, Y, X; any float
    dtype and device). Returns its parameters (on the features' device).

    ``scales``/``channels``: of the filter bank that made the features, stored with the
    weights so :func:`predict_image` computes the same features (``channels`` is inferred
    from the number of features when not given)."""
    x, y = _stroke_voxels(features, strokes)
    per_channel = len(feature_names(1, scales))
    channels = channels or features.shape[0] // per_channel
    if channels * per_channel != features.shape[0]:
        raise VoxSegError(f"{features.shape[0]} features do not match {channels} channel(s) "
                          f"of the filter bank at scales {tuple(scales)}")
    generator = torch.Generator().manual_seed(config.seed)
    sample = _sample_voxels(features, 1 << 16, generator)
    params = fit_voxels(x, y, sample, num_classes=num_classes, config=config,
                        generator=generator)
    params["scales"] = torch.tensor(tuple(scales), dtype=torch.float64)
    params["channels"] = torch.tensor([channels])
    return params


def check_classes(y: torch.Tensor, num_classes: int | None) -> tuple[torch.Tensor, int]:
    """The classes present in stroke classes ``y`` (1..K) and K, or a VoxSegError."""
    present = torch.unique(y)
    if len(present) < 2:
        raise VoxSegError("the strokes hold fewer than two classes; paint at least two classes "
                          "before training")
    k = int(num_classes or int(present.max()))
    if present.max() > k:
        raise VoxSegError(f"the strokes hold class {int(present.max())} but num_classes is {k}")
    return present, k


def fit_voxels(x: torch.Tensor, y: torch.Tensor, sample: torch.Tensor, *,
               num_classes: int | None = None, config: Stage1Config = Stage1Config(),
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Train the MLP on stroke voxels ``x`` (N, F) float32 of classes ``y`` (N,) in 1..K;
    ``sample`` (n, F): voxels of the volume for the feature standardization. The weights,
    without the filter bank's settings (see :func:`fit`)."""
    present, k = check_classes(y, num_classes)
    device = x.device
    generator = generator or torch.Generator().manual_seed(config.seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    try:
        params = {"mean": sample.mean(0), "std": sample.std(0).clamp_min(1e-6)}
        sizes = (x.shape[1], *config.hidden, k)
        modules = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    finally:
        torch.random.set_rng_state(torch_state)
    net = torch.nn.Sequential(*[m for layer in modules for m in (layer, torch.nn.ReLU())][:-1])
    net.to(device)
    x = _transform(params, x)
    members = [torch.nonzero(y == c).squeeze(1).to(device) for c in present]
    per_class = max(1, config.batch // len(members))
    target = torch.cat([torch.full((per_class,), int(c) - 1, dtype=torch.int64)
                        for c in present]).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    with cpu_threads(config.threads, device):
        _train(net, optimizer, x, members, per_class, target, config, generator)
    for i, layer in enumerate(modules):
        params[f"layer{i}.weight"] = layer.weight.detach().clone()
        params[f"layer{i}.bias"] = layer.bias.detach().clone()
    return params


@contextmanager
def cpu_threads(threads: int | None, device: str | torch.device = "cpu"):
    """Run torch's CPU operations with ``threads`` threads (None: as they are), then restore.
    Stage 1's operations are small: on a busy CPU (the U-Net training beside it) every extra
    thread makes each of them wait for the slowest (filters 20x slower at 2 threads on a
    loaded 2-core machine)."""
    before = torch.get_num_threads()
    if threads and torch.device(device).type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(net, optimizer, x, members, per_class, target, config, generator) -> None:
    device = x.device
    beta = np.random.default_rng(config.seed)
    began = time.perf_counter()
    for _ in range(config.steps):
        pick = torch.cat([m[torch.randint(len(m), (per_class,), generator=generator)
                           .to(device)] for m in members])
        batch = x[pick]
        if config.noise:
            batch = batch + config.noise * torch.randn(batch.shape, generator=generator
                                                       ).to(device)
        if config.mixup:
            lam = torch.as_tensor(beta.beta(config.mixup, config.mixup, (len(batch), 1)),
                                  dtype=batch.dtype).to(device)
            other = torch.randperm(len(batch), generator=generator).to(device)
            logits = net(lam * batch + (1 - lam) * batch[other])
            lam = lam.squeeze(1)
            loss = (lam * F.cross_entropy(logits, target, reduction="none") + (1 - lam)
                    * F.cross_entropy(logits, target[other], reduction="none")).mean()
        else:
            loss = F.cross_entropy(net(batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if config.max_seconds is not None and time.perf_counter() - began > config.max_seconds:
            break


def _sample_voxels(features: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``n`` random voxels (n, F) float32, for the feature standardization."""
    flat = features.reshape(features.shape[0], -1)
    if flat.shape[1] > n:
        flat = flat[:, torch.randint(flat.shape[1], (n,), generator=generator)
                    .to(features.device)]
    return flat.t().float()


def predict_proba(params: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """Class probabilities (K, Z, Y, X) float32 of features (F, Z, Y, X), in chunks."""
    params = {k: v.to(features.device) for k, v in params.items()}
    flat = features.reshape(features.shape[0], -1)
    k = params[f"layer{len(_layers(params)) - 1}.bias"].numel()
    out = torch.empty((k, flat.shape[1]), dtype=torch.float32, device=features.device)
    with torch.no_grad():
        for start in range(0, flat.shape[1], _PREDICT_CHUNK):
            x = flat[:, start:start + _PREDICT_CHUNK].t().float()
            logits = _forward(params, _transform(params, x))
            out[:, start:start + _PREDICT_CHUNK] = torch.softmax(logits, 1).t()
    return out.view(k, *features.shape[1:])


def predict_labels(params: dict[str, torch.Tensor], features: torch.Tensor) -> np.ndarray:
    """Labels (Z, Y, X) uint8, 1..K, of features (F, Z, Y, X)."""
    return (predict_proba(params, features).argmax(0) + 1).to(torch.uint8).cpu().numpy()


def predict_image(params: dict[str, torch.Tensor], image, voxel_size=None, *,
                  block: Sequence[int] = (64, 128, 128), device: str | torch.device = "cpu",
                  out: np.ndarray | None = None) -> np.ndarray:
    """Probabilities (K, Z, Y, X) float32 of a ``(C, Z, Y, X)`` image (numpy, memmap, zarr),
    block by block: memory holds one block's features, whatever the volume's size. ``out``:
    where to write them (e.g. a zarr array), by default a new numpy array."""
    scales = tuple(float(s) for s in params["scales"])
    channels = int(params["channels"][0])
    if len(image.shape) != 4 or image.shape[0] != channels:
        raise VoxSegError(f"the image has shape {tuple(image.shape)}; this classifier needs "
                          f"({channels}, Z, Y, X)")
    k = params[f"layer{len(_layers(params)) - 1}.bias"].numel()
    if out is None:
        out = np.empty((k, *image.shape[1:]), dtype=np.float32)
    bounds = default_bounds(image)
    for region, feats in iter_feature_blocks(image, block, voxel_size=voxel_size,
                                             scales=scales, bounds=bounds, device=device):
        out[(slice(None), *region)] = predict_proba(params, feats).cpu().numpy()
    return out

