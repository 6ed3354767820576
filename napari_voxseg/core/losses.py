"""Losses. Every loss ignores voxels labelled 0 ("not annotated").

A loss takes logits ``(N, K, Z, Y, X)`` and labels ``(N, Z, Y, X)`` (int64, 0 = ignore, 1..K =
classes) and returns a scalar. A batch with no annotated voxel gives exactly 0 (with a graph,
so ``backward`` still works) rather than the NaN of a mean over nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import VoxSegError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class MaskedCrossEntropy(torch.nn.Module):
    """Cross-entropy over annotated voxels, optionally weighted per class.

    With weights this is the weighted mean of PyTorch's ``cross_entropy`` (each voxel's loss
    times its class weight, divided by the sum of the weights of the annotated voxels).
    """

    def __init__(self, class_weights: Sequence[float] | None = None):
        super().__init__()
        weight = None if class_weights is None else torch.as_tensor(class_weights,
                                                                   dtype=torch.float32)
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.weight is not None and self.weight.numel() != logits.shape[1]:
            raise VoxSegError(f"{self.weight.numel()} class weights for {logits.shape[1]} "
                              "classes; give one weight per class")
        target = labels.long() - 1  # class 1..K -> 0..K-1, "not annotated" 0 -> -1
        annotated = target >= 0
        if self.weight is not None:
            annotated = annotated & (self.weight[target.clamp(min=0)] > 0)
        if not bool(annotated.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), target.masked_fill(~annotated, -1),
                               weight=self.weight, ignore_index=-1)


LOSSES: dict[str, Callable[..., Loss]] = {
    "ce": MaskedCrossEntropy,
}


def build_loss(name: str, class_weights: Sequence[float] | None = None) -> Loss:
    """The loss registered under ``name``, with optional per-class weights."""
    try:
        factory = LOSSES[name]
    except KeyError:
        raise VoxSegError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}") \
            from None
    return factory(class_weights=class_weights)
