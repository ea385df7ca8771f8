"""The FER LightningDataModule: any source, held in memory, augmented a whole batch at a time."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fer_lightning.data.augment import BatchAugment, center_crop
from fer_lightning.data.batching import InMemoryBatches, ShardedBatchSampler
from fer_lightning.data.folds import fold_splits
from fer_lightning.data.splits import SplitArrays, as_batch

log = logging.getLogger("fer_lightning.data")

NORMALIZATIONS = ("unit", "symmetric", "dataset")


class Source(Protocol):
    """What every data source provides: its splits, the classes its labels index, and how training targets are
    made (``majority``: hard labels; FER+ sources also offer vote-distribution modes)."""

    class_names: tuple[str, ...]
    label_mode: str

    def load(self) -> dict[str, SplitArrays]: ...


def stratified_split(split: SplitArrays, fraction: float, seed: int) -> tuple[SplitArrays, SplitArrays]:
    """Carve ``fraction`` of every class off ``split``, reproducibly for ``seed``: (rest, carved)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    carved = []
    for label in split.labels.unique():
        members = torch.nonzero(split.labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        carved.append(members[: round(fraction * len(members))])
    carved_index = torch.cat(carved).sort().values
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[carved_index] = False
    return split.subset(torch.nonzero(keep).flatten()), split.subset(carved_index)


class FERDataModule(L.LightningDataModule):
    """Train / val / test splits of a FER source, with batched augmentation on the batch's device.

    Batches travel as uint8 (4x less to copy) and become float pixel values 0..255 in
    ``on_after_batch_transfer``; training batches are augmented there. The model normalises with
    ``input_mean`` / ``input_std`` (kept in its checkpoint), so exported models take raw pixels.

    Each split name option lists candidates, first present wins: CSV copies have
    Training/PublicTest/PrivateTest, image folders train/test. A missing validation split is carved
    from train (``val_fraction``, stratified, seeded); a missing test split only disables testing.
    ``folds``/``fold``: subject-independent cross-validation instead (``fer_lightning.data.folds``): every face
    the source has, dealt to ``folds`` subject-disjoint folds (``fold_seed``); fold ``fold`` is the test set.

    ``train_side``, when set below the training images' side, shrinks every augmented training batch to it
    (the :class:`~fer_lightning.training.callbacks.ProgressiveResizing` callback sets it per epoch);
    validation and testing always see full-size faces.
    """

    def __init__(
        self,
        source: Source,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        train_split: Sequence[str] = ("Training", "train"),
        val_split: Sequence[str] = ("PublicTest", "val"),
        test_split: Sequence[str] = ("PrivateTest", "test"),
        val_fraction: float = 0.1,
        normalize: str = "unit",
        augment: BatchAugment | None = None,
        on_device: bool = False,
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
        fold_seed: int = 0,
    ) -> None:
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"data.normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.source = source
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.split_names = {"train": list(train_split), "val": list(val_split), "test": list(test_split)}
        self.val_fraction, self.normalize, self.seed = val_fraction, normalize, seed
        self.augment = augment or BatchAugment()
        self.on_device = on_device
        self.folds, self.fold, self.fold_seed = folds, fold, fold_seed
        self.train_side: int | None = None
        # A source with its own label set (FER+: 8 classes) says so; the module and every report follow it.
        self.class_names: tuple[str, ...] = tuple(source.class_names)
        self.splits: dict[str, SplitArrays] = {}
        self.loaded: dict[str, SplitArrays] = {}

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> dict[str, SplitArrays]:
        """The source's own splits, read once (``all_faces`` needs no more: no folds, no carved validation)."""
        if not self.loaded:
            self.loaded = self.source.load()
        return self.loaded

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        loaded = self.load()
        if self.folds:
            self.splits = fold_splits(self.all_faces(), self.folds, self.fold, self.fold_seed)
            log.info("fold %d of %d (subject-independent): %s", self.fold, self.folds, self._sizes())
            return
        chosen = {role: next((n for n in names if n in loaded), None) for role, names in self.split_names.items()}
        if chosen["train"] is None:
            hint = (
                "; a dataset without official splits trains with data.folds=10 data.fold=0" if "all" in loaded else ""
            )
            raise ValueError(
                f"no training split: looked for {self.split_names['train']}, the data has {sorted(loaded)}{hint}"
            )
        train = loaded[chosen["train"]]
        if chosen["val"] is None:
            train, val = stratified_split(train, self.val_fraction, self.seed)
            log.info(
                "no split named %s: validating on %.0f%% of %s",
                self.split_names["val"],
                100 * self.val_fraction,
                chosen["train"],
            )
        else:
            val = loaded[chosen["val"]]
        self.splits = {"train": train, "val": val}
        if chosen["test"] is None:
            log.warning(
                "no test split (looked for %s; the data has %s): testing will be skipped",
                self.split_names["test"],
                sorted(loaded),
            )
        else:
            self.splits["test"] = loaded[chosen["test"]]
        for role, split in self.splits.items():
            if len(split) == 0:
                raise ValueError(f"the {role} split ({chosen.get(role) or 'carved'}) is empty")
        log.info("splits: %s", self._sizes())

    def _sizes(self) -> dict[str, int]:
        return {role: len(split) for role, split in self.splits.items()}

    def all_faces(self) -> SplitArrays:
        """Every face the source has, all its splits together (a model from elsewhere is scored on them all)."""
        return SplitArrays.concat(list(self.load().values()))

    @property
    def source_names(self) -> tuple[str, ...]:
        """The members of a mixed source (``origins`` index them), else nothing."""
        return tuple(getattr(self.source, "member_names", ()))

    def _draw_weights(self) -> torch.Tensor | None:
        """Per training face, how likely it is drawn: a mixed source's member weights; None when all are equal."""
        weights, origins = getattr(self.source, "weights", None), self.splits["train"].origins
        if not weights or len(set(weights)) == 1 or origins is None:
            return None
        return torch.tensor(weights, dtype=torch.float64)[origins]

    def has_split(self, role: str) -> bool:
        return role in self.splits

    @property
    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.splits["train"].labels, minlength=len(self.class_names))

    @property
    def label_mode(self) -> str:
        """How training targets are made: ``majority`` (hard labels) or a FER+ soft-label mode."""
        return self.source.label_mode

    @property
    def input_mean_std(self) -> tuple[float, float]:
        """Pixel-space (0..255) mean and std the model subtracts and divides by."""
        if self.normalize == "unit":
            return 0.0, 255.0
        if self.normalize == "symmetric":
            return 127.5, 127.5
        pixels = self.splits["train"].images.float()
        return pixels.mean().item(), pixels.std().item()

    # ---- loaders ---------------------------------------------------------------------------
    def _loader(self, role: str, batch_size: int, train: bool) -> DataLoader:
        split = self.splits[role]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if self.on_device and self.trainer:
            device = self.trainer.strategy.root_device
            split = split.to(device)
        sampler = ShardedBatchSampler(
            len(split),
            batch_size,
            shuffle=train,
            drop_last=train and len(split) > batch_size,
            seed=self.seed,
            rank=rank,
            world_size=world,
            weights=self._draw_weights() if train else None,
        )
        return DataLoader(InMemoryBatches(split), sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, train=False)

    # ---- on the device ---------------------------------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels, index, *targets = batch  # soft targets come only with FER+ soft-label training
        images = as_batch(images)
        if self.trainer is not None and self.trainer.training:
            generator = self._batch_generator(images.device, index)
            images = self.augment(images, generator)
            if self.train_side is not None and self.train_side < images.shape[-1]:
                images = F.interpolate(images, size=self.train_side, mode="bilinear", antialias=True)
            if targets and self.label_mode == "probability":
                # FER+ "probability" mode: a one-hot target drawn from the vote distribution at every step.
                drawn = torch.multinomial(targets[0], 1, generator=generator)
                targets = [torch.zeros_like(targets[0]).scatter_(1, drawn, 1.0)]
        elif self.augment.crop_size:
            images = center_crop(images, self.augment.crop_size)
        return images, labels, index, *targets

    def _batch_generator(self, device: torch.device, index: torch.Tensor) -> torch.Generator:
        # Seeded from (seed, step, rank): identical on a resumed run, different on every rank.
        step = self.trainer.global_step if self.trainer else 0
        rank = self.trainer.global_rank if self.trainer else 0
        return torch.Generator(device=device).manual_seed(hash((self.seed, step, rank)) & 0x7FFF_FFFF_FFFF)
