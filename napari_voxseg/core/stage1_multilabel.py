"""Stage 1 for multi-label tasks (classes may overlap): one binary stage 1 (:mod:`.stage1`,
its classes 1 = absent and 2 = present) per class, on one filter bank computed once per block.

    model = fit_multilabel_stage1(image, strokes, voxel_size)   # strokes (K, Z, Y, X) 0/1/2
    probs = model.predict_proba(image)          # (K, Z, Y, X) float32, P(class k is present)

Each class is fitted on its own annotation volume (0 = not annotated, 1 = absent, 2 =
present), so a voxel may be present in several classes. Stored like a :class:`~.stage1.Stage1`
(safetensors arrays, ``class{k}.`` before each class's names; JSON metadata): no pickle.
:func:`load_stage1` rebuilds either kind from what :meth:`state_dict`/:meth:`metadata` gave.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import VoxSegError
from .stage1 import _BLOCK, Stage1, predict_blockwise
from .stage1 import FORMAT as SINGLE_FORMAT

FORMAT = "voxseg-stage1-multilabel"
VERSION = 1


@dataclass(eq=False)
class MultiLabelStage1:
    """K binary stage 1s (classes 1 = absent, 2 = present) with one filter bank; the
    probability of class k is its stage 1's probability of 'present'."""

    members: list  # of Stage1, all with the same channels, scales and voxel size

    task = "multilabel"

    @property
    def num_classes(self) -> int:
        return len(self.members)

    @property
    def channels(self) -> int:
        return self.members[0].channels

    @property
    def scales(self) -> tuple[float, ...]:
        return self.members[0].scales

    @property
    def voxel_size(self):
        return self.members[0].voxel_size

    @property
    def has_mlp(self) -> bool:
        return all(m.has_mlp for m in self.members)

    bounds_of = staticmethod(Stage1.bounds_of)

    def predict_proba(self, image, region: Sequence[slice] | None = None, *,
                      voxel_size: Sequence[float] | None = None, bounds: np.ndarray | None = None,
                      device: str | torch.device = "cpu", block: Sequence[int] = _BLOCK,
                      threads: int | None = 1, out=None, should_stop=None) -> np.ndarray:
        """P(present) (K, z, y, x) float32 of ``region`` of a ``(C, Z, Y, X)`` image, block by
        block, each block's features computed once for all classes (arguments as
        :meth:`.Stage1.predict_proba`)."""
        mlps = [{k: v.to(device) for k, v in m.mlp.items()} for m in self.members]

        def predict(feats):
            return torch.stack([member.predict_features(feats, mlp)[1]
                                for member, mlp in zip(self.members, mlps)])

        return predict_blockwise(self, predict, image, region, voxel_size=voxel_size,
                                 bounds=bounds, device=device, block=block, threads=threads,
                                 out=out, should_stop=should_stop)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"class{k}.{name}": value for k, member in enumerate(self.members)
                for name, value in member.state_dict().items()}

    def metadata(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "task": "multilabel",
                "num_classes": self.num_classes, "channels": self.channels,
                "classes": [m.metadata() for m in self.members],
                "combine": "class k's probability is its own stage 1's of 'present'"}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], metadata) -> MultiLabelStage1:
        meta = json.loads(metadata) if isinstance(metadata, str) else dict(metadata)
        try:
            classes = list(meta["classes"])
            if meta.get("format") != FORMAT or int(meta.get("version", 0)) > VERSION or \
                    not classes or int(meta["num_classes"]) != len(classes):
                raise ValueError(f"format {meta.get('format')} {meta.get('version')}")
        except (ValueError, TypeError, KeyError) as error:
            raise VoxSegError(f"the stage-1 settings are not a voxseg multi-label stage 1 of "
                              f"version {VERSION} or older ({error}); save it again") from None
        members = []
        for k, settings in enumerate(classes):
            prefix = f"class{k}."
            members.append(Stage1.from_state({name[len(prefix):]: value for name, value
                                              in state.items() if name.startswith(prefix)},
                                             settings))
        if any(m.num_classes != 2 or (m.channels, m.scales) != (members[0].channels,
                                                                 members[0].scales)
               for m in members):
            raise VoxSegError("the multi-label stage 1's classes do not match each other; the "
                              "model file is damaged, save it again")
        return cls(members)


def fit_multilabel_stage1(image, strokes, voxel_size: Sequence[float] | None = None, *,
                          seed: int = 0, **kwargs) -> MultiLabelStage1:
    """One binary stage 1 per class of multi-label ``strokes`` (K, Z, Y, X; per class 0 = not
    annotated, 1 = absent, 2 = present); ``kwargs`` as :func:`~.stage1.fit_stage1` takes."""
    from .stage1 import fit_stage1

    strokes = np.asarray(strokes)
    if strokes.ndim != 4:
        raise VoxSegError(f"multi-label strokes have shape {strokes.shape}; give (K, Z, Y, X), "
                          "one annotation volume per class")
    kwargs.pop("num_classes", None)
    return MultiLabelStage1([fit_stage1(image, layer, voxel_size, seed=seed + k, num_classes=2,
                                        **kwargs) for k, layer in enumerate(strokes)])


def load_stage1(state: dict[str, torch.Tensor], metadata):
    """A :class:`~.stage1.Stage1` or :class:`MultiLabelStage1` from its arrays and metadata
    (dict or JSON string), whichever the metadata's format says."""
    meta = json.loads(metadata) if isinstance(metadata, str) else dict(metadata)
    if meta.get("format") == FORMAT:
        return MultiLabelStage1.from_state(state, meta)
    if meta.get("format") not in (SINGLE_FORMAT, None):
        raise VoxSegError(f"the stage-1 format {meta.get('format')!r} is unknown to this "
                          "voxseg; update voxseg or save the model again")
    return Stage1.from_state(state, meta)
