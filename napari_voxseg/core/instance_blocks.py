"""Instance labels of volumes larger than memory, block by block, equal to the whole volume's.

    count = instance_labels_blocks("labels.zarr", out, classes=[2], voxel_size=(2, 0.5, 0.5))

Two passes over the blocks, in this process, writing into ``out`` (created by the caller:
numpy, or zarr, best with chunks that the blocks are made of, so a block rewrites only its own):

1. Connected components, exactly, across block borders. Each block is labelled with one more
   voxel on its low side (the last faces of the blocks before it in raster order, already
   labelled): a component met on both sides of a border is one, by union-find over those
   faces. Any two neighbouring voxels lie together in some such extended block, so this holds
   for any connectivity. Provisional ids count down from 2**32 - 1, out of the way of the final
   ids, which count up from 1. The bounding box of every component is kept (6 numbers each).
2. Objects. A component is "owned" by the block that holds the corner of its bounding box
   nearest the origin, and is split there (:func:`.instances.split`), in its own bounding box,
   read from the block and its halo on the high side (where every owned component starts) or,
   when it reaches beyond, read on its own. Each block then gives its voxels their final ids.

Why this equals :func:`.instances.instance_labels` on the whole volume up to renumbering:
both split every component on its own, from the same mask in the same box, and pass 1 finds
the same components. This holds for every object, whatever the blocks, except the components
whose bounding box has more than ``max_object_voxels`` voxels: those are kept whole, unsplit
(the whole-volume function splits them unless it is given the same limit). Not guaranteed:
the ids themselves (numbered in block order here, in raster order per class there), and
equality with a run on other settings (voxel size, h, h_rel, connectivity).

Memory: a block with its halo, a component's box up to ``max_object_voxels`` (about 120 bytes
a voxel while it is split: distances, seeds and watershed; by default a block with its halo on
every side, 2.5 M voxels, 300 MB), and about 70 bytes per piece of a component in a block.
Measured (benchmarks/instances.py --memory): 207 MB peak for 256 x 512 x 512 from zarr to zarr,
against 745 MB for the whole-volume function; 0.49 s against 0.41 s on 128 x 256 x 256.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .errors import VoxSegError
from .instances import (
    DEFAULT_H_REL,
    MAX_ID,
    Group,
    Settings,
    check_ids,
    keeps_whole,
    output_shape,
    plan,
    read_masks,
    settings,
    split,
)
from .zarrs import open_zarr

DEFAULT_BLOCK = (64, 128, 128)
DEFAULT_HALO = 16


def regions(shape: Sequence[int], block: Sequence[int]) -> list[tuple[slice, ...]]:
    """Non-overlapping blocks covering ``shape``, in raster order (as :func:`.blocks.
    block_regions`, which this module does not import, as it loads torch)."""
    ranges = [[slice(s, min(s + b, n)) for s in range(0, n, b)] for n, b in zip(shape, block)]
    return [(z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2]]


def instance_labels_blocks(labels, out, classes: Sequence[int], *, voxel_size=None,
                           split_touching=True, connectivity: int = 1, h: float | None = None,
                           h_rel: float = DEFAULT_H_REL, num_classes: int | None = None,
                           block_shape: Sequence[int] = DEFAULT_BLOCK, halo: int = DEFAULT_HALO,
                           max_object_voxels: int | None = None) -> int:
    """:func:`.instances.instance_labels` of ``labels`` (a numpy, zarr or dask array, or a
    .zarr path; (Z, Y, X) or (K, Z, Y, X)) written into ``out``, block by block; returns the
    number of objects N (ids 1..N). ``out``: a uint32 numpy or zarr array of the output's shape,
    (Z, Y, X) or (len(classes), Z, Y, X), written over. ``block_shape`` (Z, Y, X) and ``halo``
    (voxels past a block's high side) set the memory and the reads, not the result.
    ``max_object_voxels``: larger components' boxes are kept whole (default: a block with its
    halo on every side). See the module's docstring for what equals the whole-volume result.
    On an error, what ``out`` holds is no result."""
    if isinstance(labels, (str, os.PathLike)):
        labels = open_zarr(labels)
    groups = plan(labels.shape, labels.dtype, classes, num_classes)
    block = _check_block(block_shape, halo)
    if max_object_voxels is None:
        max_object_voxels = math.prod(b + 2 * halo for b in block)
    chosen = settings(voxel_size, split_touching, connectivity, h, h_rel, max_object_voxels)
    _check_out(out, labels, output_shape(labels.shape, groups))
    spatial = tuple(int(n) for n in labels.shape[-3:])
    blocks = regions(spatial, block)
    found = _Found()
    for index, group in enumerate(groups):
        for region in blocks:
            _label_block(labels, out, group, index, region, chosen, found)
    return _Objects(found, out, groups, chosen, spatial, block, halo).write(blocks)


def _check_block(block_shape, halo) -> tuple[int, int, int]:
    block = tuple(block_shape)
    if len(block) != 3 or not all(isinstance(b, (int, np.integer)) and b >= 1 for b in block):
        raise VoxSegError(f"block shape {block_shape!r} must be three whole sizes >= 1 "
                          "(Z, Y, X), e.g. (64, 128, 128)")
    if not isinstance(halo, (int, np.integer)) or halo < 0:
        raise VoxSegError(f"halo {halo!r} must be a whole number of voxels >= 0, e.g. 16")
    z, y, x = block
    return (int(z), int(y), int(x))


def _check_out(out, labels, shape) -> None:
    if out is labels:
        raise VoxSegError("the output is the labels array; give a new uint32 array to write to")
    if tuple(getattr(out, "shape", ())) != shape or np.dtype(out.dtype) != np.uint32:
        raise VoxSegError(f"the output is {getattr(out, 'dtype', type(out).__name__)} "
                          f"{tuple(getattr(out, 'shape', ()))}; create it as uint32 {shape}")


@dataclass
class _Found:
    """Pass 1's components: provisional index i is stored as the value MAX_ID - i."""

    count: int = 0
    lo: list = field(default_factory=list)  # (n, 3) box starts per block, then joined
    hi: list = field(default_factory=list)  # (n, 3) box stops
    group: list = field(default_factory=list)  # (n,) output layer
    pairs: list = field(default_factory=list)  # (m, 2) indices met across a face


def _label_block(labels, out, group: Group, index: int, region, chosen: Settings,
                 found: _Found) -> None:
    """Pass 1 for one block: its components, written as provisional ids, their boxes, and the
    components they continue (read from the faces before it)."""
    ext = tuple(slice(max(r.start - 1, 0), r.stop) for r in region)
    local = np.zeros(tuple(e.stop - e.start for e in ext), np.int64)
    count = 0
    for mask in read_masks(labels, ext, group):
        components, n = ndi.label(mask, chosen.structure)
        local[mask] = components[mask] + count
        count += n
    base = found.count
    core = local[tuple(slice(r.start - e.start, None) for r, e in zip(region, ext))]
    out[group.out_key + region] = np.where(core > 0, MAX_ID + 1 - base - core, 0).astype(
        np.uint32)
    if count == 0:
        return
    if base + count >= MAX_ID // 2:
        raise VoxSegError("the labels hold too many separate pieces to number in uint32; "
                          "choose fewer classes or split the volume")
    boxes = ndi.find_objects(local)
    offset = np.array([e.start for e in ext])
    found.lo.append(np.array([[s.start for s in b] for b in boxes]) + offset)
    found.hi.append(np.array([[s.stop for s in b] for b in boxes]) + offset)
    found.group.append(np.full(count, index))
    for axis in range(3):
        if ext[axis].start < region[axis].start:
            face = list(ext)
            face[axis] = slice(ext[axis].start, ext[axis].start + 1)
            before = np.asarray(out[group.out_key + tuple(face)]).take(0, axis=axis)
            here = local.take(0, axis=axis)
            both = (here > 0) & (before > 0)
            pairs = np.stack([base + here[both] - 1, MAX_ID - before[both].astype(np.int64)], 1)
            found.pairs.append(np.unique(pairs, axis=0))
    found.count += count


class _Objects:
    """Pass 2: the components joined, split where owned, and every voxel's final id."""

    def __init__(self, found: _Found, out, groups, chosen, spatial, block, halo):
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        self.out, self.groups, self.chosen = out, groups, chosen
        self.spatial, self.block, self.halo = spatial, block, halo
        self.limit = MAX_ID - found.count  # above: a provisional id
        n = found.count
        pairs = np.concatenate(found.pairs) if found.pairs else np.zeros((0, 2), np.int64)
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        roots, self.root_of = connected_components(graph, directed=False)
        lo = np.concatenate(found.lo) if n else np.zeros((0, 3), np.int64)
        hi = np.concatenate(found.hi) if n else np.zeros((0, 3), np.int64)
        self.lo = np.full((roots, 3), np.iinfo(np.int64).max)
        self.hi = np.zeros((roots, 3), np.int64)
        np.minimum.at(self.lo, self.root_of, lo)
        np.maximum.at(self.hi, self.root_of, hi)
        group = np.zeros(roots, np.int64)
        if n:
            group[self.root_of] = np.concatenate(found.group)
        grid = [math.ceil(s / b) for s, b in zip(spatial, block)]
        owner = np.ravel_multi_index(tuple((self.lo // block).T), grid) if roots else group
        self.key = group * math.prod(grid) + owner  # (output layer, block) that owns a root
        self.order = np.argsort(self.key, kind="stable")
        self.final = np.zeros(roots, np.int64)
        self.next_id = 1

    def write(self, blocks) -> int:
        if not self.chosen.split:  # every component is one object
            check_ids(len(self.final), self.limit)
            self.final[:] = np.arange(1, len(self.final) + 1)
            self.next_id = len(self.final) + 1
        for index, group in enumerate(self.groups):
            for number, region in enumerate(blocks):
                if self.chosen.split:
                    self._split_owned(group, index * len(blocks) + number, region)
                self._finish(group, region)
        return self.next_id - 1

    def _split_owned(self, group: Group, key: int, region) -> None:
        first, stop = np.searchsorted(self.key[self.order], [key, key + 1])
        near = None  # the block and its halo on the high side, read when first needed
        reach = tuple(min(r.stop + self.halo, n) for r, n in zip(region, self.spatial))
        for root in self.order[first:stop]:
            box = tuple(slice(a, b) for a, b in zip(self.lo[root], self.hi[root]))
            if keeps_whole(tuple(self.hi[root] - self.lo[root]), self.chosen):
                self._number(root, 1)
                continue
            if all(b.stop <= e for b, e in zip(box, reach)):
                if near is None:
                    near = np.asarray(self.out[group.out_key + tuple(
                        slice(r.start, e) for r, e in zip(region, reach))])
                crop = near[tuple(slice(b.start - r.start, b.stop - r.start)
                                  for b, r in zip(box, region))]
            else:
                crop = np.asarray(self.out[group.out_key + box])
            pieces, count = split(self._mask(crop, root), self.chosen)
            first_id = self._number(root, count)
            if count > 1:  # written now (here and in later blocks); one object waits
                current = np.asarray(self.out[group.out_key + box])
                inside = pieces > 0
                current[inside] = pieces[inside] + (first_id - 1)
                self.out[group.out_key + box] = current

    def _mask(self, crop: np.ndarray, root: int) -> np.ndarray:
        provisional = crop > self.limit
        mask = np.zeros(crop.shape, bool)
        mask[provisional] = self.root_of[MAX_ID - crop[provisional].astype(np.int64)] == root
        return mask

    def _number(self, root: int, count: int) -> int:
        check_ids(self.next_id + count - 1, self.limit)
        first, self.final[root] = self.next_id, self.next_id
        self.next_id += count
        return first

    def _finish(self, group: Group, region) -> None:
        """The block's voxels that still hold provisional ids get their component's id: every
        component that meets the block is owned by it or by a block before it."""
        current = np.asarray(self.out[group.out_key + region])
        provisional = current > self.limit
        if provisional.any():
            ids = MAX_ID - current[provisional].astype(np.int64)
            current[provisional] = self.final[self.root_of[ids]]
            self.out[group.out_key + region] = current
