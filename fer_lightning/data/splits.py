"""The in-memory form every data source produces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class SplitArrays:
    """One split held whole in memory.

    ``images`` is uint8 (N, H, W) for grayscale faces (48x48 for FER-2013) or (N, C, H, W) for colour ones
    (``data.source.channels=3``), and ``labels`` int64 (N,). Keeping uint8 until the batch
    reaches its device makes the whole of FER-2013 about 83 MB and host-to-device copies 4x smaller.
    ``targets``, float (N, classes), are soft training targets (FER+ vote distributions); the hard
    ``labels`` stay beside them for accuracy, class counts and stratified splits. ``groups``, int64 (N,), says
    whose face each is (CK+ subjects, JAFFE posers), for subject-independent folds; ``origins``, int64 (N,), which
    member of a mixed source it came from, for per-source figures.
    """

    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    origins: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0] if self.images.ndim else 0
        if self.images.dtype != torch.uint8 or self.images.ndim not in (3, 4):
            raise ValueError(
                f"images must be uint8 (N, H, W) or (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if self.targets is not None and (self.targets.ndim != 2 or self.targets.shape[0] != n):
            raise ValueError(f"targets must have shape ({n}, C), got {tuple(self.targets.shape)}")
        for name in ("groups", "origins"):
            value = getattr(self, name)
            if value is not None and value.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {tuple(value.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _map(self, fn) -> SplitArrays:
        return SplitArrays(**{f.name: None if (v := getattr(self, f.name)) is None else fn(v) for f in fields(self)})

    def subset(self, index: torch.Tensor) -> SplitArrays:
        return self._map(lambda t: t.index_select(0, index))

    def to(self, device: torch.device | str) -> SplitArrays:
        return self._map(lambda t: t.to(device))

    @property
    def channels(self) -> int:
        return 1 if self.images.ndim == 3 else int(self.images.shape[1])

    @staticmethod
    def concat(splits: Sequence[SplitArrays]) -> SplitArrays:
        """The splits one after the other; an optional field is kept only when every split has it."""
        if not splits:
            raise ValueError("nothing to concatenate")
        sides = {tuple(s.images.shape[1:]) for s in splits}
        if len(sides) > 1:
            raise ValueError(f"cannot put images of different sizes together: {sorted(sides)}")
        values = {}
        for f in fields(SplitArrays):
            parts = [getattr(s, f.name) for s in splits]
            values[f.name] = None if any(p is None for p in parts) else torch.cat(parts)
        return SplitArrays(**values)


def as_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 faces (N, H, W) or (N, C, H, W) as the float (N, C, H, W) batch a network takes."""
    return (images.unsqueeze(1) if images.ndim == 3 else images).float()
