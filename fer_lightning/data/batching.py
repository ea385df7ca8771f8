"""Whole-batch loading from in-memory tensors: one ``index_select`` per batch, no per-sample collate.

``index_select`` copies whole rows; ``images[index]`` copies pixel by pixel and took 11x longer (150 us
of a 64-image batch on a CPU core here).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from fer_lightning.data.splits import SplitArrays


class InMemoryBatches(Dataset):
    """Indexed by a tensor of sample indices; returns ``(images uint8, labels, indices)`` for all of them.

    A split with soft ``targets`` (FER+ training) adds them as a fourth element, so every 3-tuple consumer
    (evaluation, TTA, prediction) is unchanged.
    """

    def __init__(self, split: SplitArrays) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        index = index.to(self.split.images.device)  # data.on_device: the split lives on the GPU
        batch = self.split.images.index_select(0, index), self.split.labels.index_select(0, index), index
        if self.split.targets is None:
            return batch
        return *batch, self.split.targets.index_select(0, index)


class ShardedBatchSampler(Sampler[torch.Tensor]):
    """Yields index tensors: shuffled per epoch from ``seed`` when training, in order otherwise.

    It also does the work of a DistributedSampler (each rank takes every ``world_size``-th sample),
    but never pads with duplicates, so validation metrics under DDP count each image exactly once.
    Lightning calls ``set_epoch`` on it, which makes the order a function of (seed, epoch) alone:
    a run resumed from a checkpoint sees the same batches as one that never stopped. With ``weights`` (one per
    sample, training only) an epoch is ``num_samples`` draws with replacement, each sample drawn with a chance
    proportional to its weight (``data=mixed``'s member weights).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: torch.Tensor | None = None,
    ) -> None:
        if weights is not None and weights.shape != (num_samples,):
            raise ValueError(f"weights must have shape ({num_samples},), got {tuple(weights.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.weights = weights
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            if self.weights is None:
                order = torch.randperm(self.num_samples, generator=generator)
            else:
                order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        if self.shuffle and self.world_size > 1:
            # Equal shard sizes keep DDP ranks in step during training (they all-reduce every step).
            order = order[: self.num_samples - self.num_samples % self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[torch.Tensor]:
        shard = self._shard()
        stop = len(shard) - len(shard) % self.batch_size if self.drop_last else len(shard)
        for start in range(0, stop, self.batch_size):
            yield shard[start : start + self.batch_size]

    def __len__(self) -> int:
        size = len(self._shard()) if self.world_size > 1 else self.num_samples
        return size // self.batch_size if self.drop_last else -(-size // self.batch_size)
