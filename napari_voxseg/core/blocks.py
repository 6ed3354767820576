"""Prediction of volumes larger than memory: block by block, from a zarr/dask/numpy array into
zarr stores, in this process or on a dask.distributed cluster.

    gen = iter_predict_blocks(model, "scan.zarr", "labels.zarr", uncertainty="unc.zarr")
    for event in gen: ...          # PredictEvent(done blocks, total blocks)

Each block is predicted from the tiles of the one tile grid over the whole volume that meet it
(see :mod:`.infer`), so the result equals predicting the volume whole, and memory holds one
block (with a tile's margin) at a time, whatever the volume's size. Normalization uses
percentiles of an evenly strided sample of the volume (the whole of it when it is small).
The outputs are written into temporary stores beside the targets and renamed at the end: a
crash or a cancel leaves no half-written store.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch

from .card import image_channels
from .data import normalize_with
from .errors import VoxSegError
from .folders import (
    replace_folder,
    sweep_leftovers,
    temporary_folder_beside,
)
from .infer import (
    DEFAULT_OVERLAP,
    PredictEvent,
    iter_blend,
    run_to_end,
    stage1_reader,
    volume_bounds,
)
from .models import attach, divisors, model_config
from .outputs import ZARR, ZARR_MARK, check_outputs
from .tasks import check_extra_outputs, task_of
from .zarrs import create_image, image_array, open_zarr, open_zarr_levels  # noqa: F401

# A block's spatial size by default: with K = 3 classes its float32 scores, weights and input
# take about 16M voxels x 24 bytes = 400 MB.
DEFAULT_BLOCK_VOXELS = 2**24


class _WithChannel:
    """A ``(Z, Y, X)`` lazy array seen as ``(1, Z, Y, X)``, reading only what is asked for."""

    def __init__(self, array):
        self.array = array
        self.shape = (1, *array.shape)
        self.dtype = array.dtype

    def __getitem__(self, key):
        return np.asarray(self.array[key[1:]])[np.newaxis]


def open_source(source):
    """A ``(C, Z, Y, X)`` array-like over ``source``: a path to a .zarr store, a zarr or dask
    array, or a numpy array, of 3 (Z, Y, X) or 4 (C, Z, Y, X) dimensions. Nothing is read."""
    if isinstance(source, (str, os.PathLike)):
        source = open_zarr(source)
    shape = tuple(getattr(source, "shape", ()))
    dtype = np.dtype(getattr(source, "dtype", np.float32))
    if dtype.kind not in "biuf":
        raise VoxSegError(f"the image has dtype {dtype}, not numbers; give a grey-level volume")
    if len(shape) == 3:
        source = _WithChannel(source)
    elif len(shape) != 4:
        raise VoxSegError(f"the image is {len(shape)}D {shape}; block-wise prediction takes "
                          "(Z, Y, X) or (C, Z, Y, X)")
    if 0 in source.shape:
        raise VoxSegError(f"the image is empty (shape {tuple(source.shape)})")
    return source


def block_regions(shape: Sequence[int], block: Sequence[int]) -> list[tuple[slice, ...]]:
    """Non-overlapping blocks of size ``block`` (smaller at the ends) covering ``shape``."""
    ranges = [[slice(s, min(s + b, n)) for s in range(0, n, b)] for n, b in zip(shape, block)]
    return [(z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2]]


def default_block(shape: Sequence[int], patch: Sequence[int],
                  voxels: int = DEFAULT_BLOCK_VOXELS) -> tuple[int, int, int]:
    """A block of about ``voxels`` voxels, a whole number of tiles a side, no larger than the
    volume; square in Y, X."""
    side = max(1, int(round((voxels / math.prod(patch)) ** (1 / 3))))
    return cast(tuple[int, int, int], tuple(int(min(n, side * p)) for n, p in zip(shape, patch)))


@dataclass
class BlockJob:
    """What every block needs (picklable, for dask workers)."""

    config: dict
    state: dict  # the weights as numpy arrays
    bounds: np.ndarray
    pad_value: float
    overlap: float = DEFAULT_OVERLAP
    batch_size: int = 4
    device: str | None = None
    outputs: dict = field(default_factory=dict)  # name -> store path (for workers)
    precision: str = "auto"
    # A two-stage model's stage 1: its arrays, its normalization of the source, the voxel size.
    stage1_state: dict | None = None
    stage1_bounds: np.ndarray | None = None
    voxel_size: tuple | None = None

    def model(self) -> torch.nn.Module:
        key = (id(self.state), self.device)
        model = _WORKER_MODELS.get(key)
        if model is None:
            from .models import build_model

            model = build_model(self.config["architecture"])
            model.load_state_dict({k: torch.from_numpy(np.asarray(v))
                                   for k, v in self.state.items()})
            attach(model, config=self.config)
            if self.stage1_state is not None:
                from .stage1_multilabel import load_stage1

                model.stage1 = load_stage1({k: torch.from_numpy(np.asarray(v)) for k, v
                                            in self.stage1_state.items()},
                                           self.config["stage1"])
            _WORKER_MODELS.clear()
            _WORKER_MODELS[key] = model
        return model


_WORKER_MODELS: dict = {}


def predict_block(job: BlockJob, source, region, *, probabilities: bool, uncertainty: bool,
                  model: torch.nn.Module | None = None, should_stop=None):
    """Predict one block (a region of three slices) of ``source`` (a ``(C, Z, Y, X)``
    array-like). The block function: it runs here or on a dask worker."""
    config = job.config
    model = model if model is not None else job.model()
    arch = config["architecture"]

    def read(slices):
        block = np.asarray(source[(slice(None), *slices)], dtype=np.float32)
        if not np.isfinite(block).all():
            where = ", ".join(f"{s.start}:{s.stop}" for s in slices)
            raise VoxSegError(f"the image has NaN or infinite values (in the block {where}); "
                              "replace them (e.g. with 0) before predicting")
        return normalize_with(block, job.bounds)

    if getattr(model, "stage1", None) is not None:  # its probabilities, from a halo around
        read = stage1_reader(model, source, read, voxel_size=job.voxel_size,
                             bounds=job.stage1_bounds, device=job.device)
    return run_to_end(iter_blend(
        model, None, read=read, spatial_shape=source.shape[1:], pad_value=job.pad_value,
        task=config.get("task", "multiclass"), divisor=divisors(arch),
        patch_size=config["patch_size"], target_scale=config.get("target_scale"),
        region=region, overlap=job.overlap, batch_size=job.batch_size, device=job.device,
        probabilities=probabilities, uncertainty=uncertainty, should_stop=should_stop,
        precision=job.precision))


def _outputs_of(result) -> dict:
    return {"labels": result.output, "probabilities": result.probabilities,
            "uncertainty": result.uncertainty}


def _write(stores: dict, region, result) -> None:
    for name, data in _outputs_of(result).items():
        if name in stores and data is not None:
            stores[name][(...,) + tuple(region)] = data


def _predict_and_write(job: BlockJob, source, region) -> None:
    """On a dask worker: predict one block and write it into the stores (chunk-aligned, so no
    two blocks write the same chunk)."""
    stores = {name: image_array(path) for name, path in job.outputs.items()}
    result = predict_block(job, source, region, probabilities="probabilities" in stores,
                           uncertainty="uncertainty" in stores)
    _write(stores, region, result)


def source_path(source) -> Path | None:
    """The folder a block-wise source is read from, when it has one (a path, or a zarr array
    opened from a local store)."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    root = getattr(getattr(source, "store", None), "root", None)
    return Path(root) if isinstance(root, (str, os.PathLike)) else None


def iter_predict_blocks(
    model: torch.nn.Module,
    source,
    out,
    *,
    probabilities=None,
    uncertainty=None,
    block_shape: Sequence[int] | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 4,
    device: str | None = None,
    voxel_size: Sequence[float] | None = None,
    should_stop: Callable[[], bool] | None = None,
    client=None,
    precision: str = "auto",
    overwrite: bool = False,
) -> Generator[PredictEvent, None, dict]:
    """Predict ``source`` block by block into the zarr store ``out`` (labels 1..K; per-class
    1/2 for multi-label; float values for regression), and optionally ``probabilities``
    (K, Z, Y, X) and ``uncertainty`` (Z, Y, X) stores. Yields a PredictEvent per block
    (``done``/``total`` blocks); returns ``{name: path}`` of the stores written, or ``{}`` when
    stopped by ``should_stop`` (then nothing is left behind). ``client``: a
    dask.distributed Client to run the blocks on its workers. An existing output store is
    replaced only with ``overwrite`` and only if voxseg wrote it; no output may be the source
    (see :mod:`.outputs`)."""

    config = model_config(model)
    arch = config["architecture"]
    task = task_of(config)
    check_extra_outputs(task, probabilities, uncertainty)
    wanted = {"labels": out, "probabilities": probabilities, "uncertainty": uncertainty}
    wanted = {name: path for name, path in wanted.items() if path}
    targets = dict(zip(wanted, check_outputs([(p, ZARR) for p in wanted.values()],
                                             inputs=[source_path(source)],
                                             overwrite=overwrite)))
    source = open_source(source)
    channels = image_channels(config)
    if source.shape[0] != channels:
        raise VoxSegError(f"the image has {source.shape[0]} channel(s) but the model was trained "
                          f"on {channels}; give (C, Z, Y, X) with C = {channels}")
    spatial = tuple(int(n) for n in source.shape[1:])
    norm = config["normalization"]
    bounds, pad_value = volume_bounds(source, norm["low"], norm["high"])
    block = tuple(int(b) for b in (block_shape or default_block(spatial, config["patch_size"])))
    if len(block) != 3 or min(block) < 1:
        raise VoxSegError(f"block shape {block} must be three sizes >= 1 (Z, Y, X)")
    regions = block_regions(spatial, block)
    k = arch["num_classes"]
    layouts = {
        "labels": ((k, *spatial), (k, *block), "uint8") if task == "multilabel" else
                  (spatial, block, "float32" if task == "regression" else "uint8"),
        "probabilities": ((k, *spatial), (k, *block), "float32"),
        "uncertainty": (spatial, block, "float32"),
    }
    for path in targets.values():
        if path.exists():
            sweep_leftovers(path)
    temporary = {name: temporary_folder_beside(path) for name, path in targets.items()}
    finished = False
    try:
        stores = {}
        for name, tmp in temporary.items():
            shape, chunks, dtype = layouts[name]
            stores[name] = create_image(tmp, shape, dtype, chunks=chunks,
                                        voxel_size=voxel_size,
                                        attrs={ZARR_MARK: name, "task": task})
        job = BlockJob(config=config, state={n: t.detach().cpu().numpy() for n, t in
                                             model.state_dict().items()},
                       bounds=bounds, pad_value=pad_value, overlap=overlap,
                       batch_size=batch_size, device=device,
                       outputs={n: str(p) for n, p in temporary.items()},
                       precision=precision, **_stage1_job(model, source, voxel_size))
        if client is None:
            model.eval()
            for done, region in enumerate(regions, 1):
                if should_stop is not None and should_stop():
                    return {}
                result = predict_block(job, source, region, model=model,
                                       probabilities="probabilities" in stores,
                                       uncertainty="uncertainty" in stores,
                                       should_stop=should_stop)
                if result.cancelled:
                    return {}
                _write(stores, region, result)
                yield PredictEvent(done=done, total=len(regions))
        else:
            yield from _run_on_cluster(client, job, source, regions, should_stop)
            if should_stop is not None and should_stop():
                return {}
        for name, tmp in temporary.items():
            replace_folder(tmp, targets[name])
        finished = True
        return dict(targets)
    finally:
        if not finished:
            for tmp in temporary.values():
                shutil.rmtree(tmp, ignore_errors=True)


def _stage1_job(model, source, voxel_size) -> dict:
    """A two-stage model's part of the :class:`BlockJob` (nothing for one stage)."""
    stage1 = getattr(model, "stage1", None)
    if stage1 is None:
        return {}
    return {"stage1_state": {k: v.numpy() for k, v in stage1.state_dict().items()},
            "stage1_bounds": stage1.bounds_of(source),
            "voxel_size": None if voxel_size is None else tuple(voxel_size)}


def _run_on_cluster(client, job: BlockJob, source, regions, should_stop):
    from distributed import as_completed

    remote_job = client.scatter(job, broadcast=True)
    futures = [client.submit(_predict_and_write, remote_job, source, region, pure=False)
               for region in regions]
    try:
        for done, future in enumerate(as_completed(futures), 1):
            future.result()  # raises the worker's error here
            yield PredictEvent(done=done, total=len(regions))
            if should_stop is not None and should_stop():
                client.cancel(futures)
                return
    except BaseException:
        client.cancel(futures)
        raise


def predict_blocks(model, source, out, **kwargs) -> dict:
    """Run :func:`iter_predict_blocks` to the end; return the stores written."""
    return run_to_end(iter_predict_blocks(model, source, out, **kwargs))
