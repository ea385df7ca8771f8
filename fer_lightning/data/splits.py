"""The in-memory form every data source produces, and the FER-2013 label order."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# FER-2013 label order; every reader, model head and report uses these indices.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
IMAGE_SIZE = 48


@dataclass(frozen=True)
class SplitArrays:
    """One split held whole in memory.

    ``images`` is uint8 (N, 48, 48) and ``labels`` int64 (N,). Keeping uint8 until the batch
    reaches its device makes the whole of FER-2013 about 83 MB and host-to-device copies 4x smaller.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> SplitArrays:
        return SplitArrays(self.images.index_select(0, index), self.labels.index_select(0, index))
