"""The in-memory form every data source produces."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SplitArrays:
    """One split held whole in memory.

    ``images`` is uint8 (N, 48, 48) and ``labels`` int64 (N,). Keeping uint8 until the batch
    reaches its device makes the whole of FER-2013 about 83 MB and host-to-device copies 4x smaller.
    ``targets``, float (N, classes), are soft training targets (FER+ vote distributions); the hard
    ``labels`` stay beside them for accuracy, class counts and stratified splits.
    """

    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        if self.targets is not None and (self.targets.ndim != 2 or self.targets.shape[0] != self.images.shape[0]):
            raise ValueError(f"targets must have shape ({self.images.shape[0]}, C), got {tuple(self.targets.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> SplitArrays:
        targets = None if self.targets is None else self.targets.index_select(0, index)
        return SplitArrays(self.images.index_select(0, index), self.labels.index_select(0, index), targets)

    def to(self, device: torch.device | str) -> SplitArrays:
        targets = None if self.targets is None else self.targets.to(device)
        return SplitArrays(self.images.to(device), self.labels.to(device), targets)
