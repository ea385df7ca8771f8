"""Splits, batching and on-device preprocessing of FERDataModule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from benchmarks.common import FixedSource
from fer_lightning.data.augment import BatchAugment
from fer_lightning.data.batching import ShardedBatchSampler
from fer_lightning.data.datamodule import FERDataModule, stratified_split
from fer_lightning.data.splits import SplitArrays


def make_split(n: int, seed: int = 0) -> SplitArrays:
    g = torch.Generator().manual_seed(seed)
    return SplitArrays(torch.randint(0, 256, (n, 48, 48), dtype=torch.uint8, generator=g), torch.arange(n) % 7)


def test_sampler_covers_every_sample_once_in_eval_across_ranks():
    seen = [
        i
        for rank in range(3)
        for batch in ShardedBatchSampler(100, 16, False, False, rank=rank, world_size=3)
        for i in batch.tolist()
    ]
    assert sorted(seen) == list(range(100))


def test_sampler_shuffles_per_epoch_and_is_reproducible():
    sampler = ShardedBatchSampler(100, 10, shuffle=True, drop_last=True, seed=1)
    first = [batch.tolist() for batch in sampler]
    sampler.set_epoch(1)
    second = [batch.tolist() for batch in sampler]
    assert first != second and len(first) == len(sampler) == 10
    again = ShardedBatchSampler(100, 10, shuffle=True, drop_last=True, seed=1)
    again.set_epoch(1)
    assert [batch.tolist() for batch in again] == second


def test_sampler_gives_ranks_equal_training_shards():
    lengths = {len(ShardedBatchSampler(101, 10, True, True, rank=r, world_size=2)) for r in range(2)}
    assert lengths == {5}


def test_stratified_split_is_seeded_and_keeps_class_proportions():
    split = make_split(700)
    rest, carved = stratified_split(split, 0.1, seed=0)
    assert len(carved) == 70 and len(rest) == 630
    assert torch.bincount(carved.labels).tolist() == [10] * 7
    assert torch.equal(stratified_split(split, 0.1, seed=0)[1].images, carved.images)
    assert not torch.equal(stratified_split(split, 0.1, seed=1)[1].images, carved.images)


def test_datamodule_carves_val_when_missing_and_uses_first_present_names():
    dm = FERDataModule(FixedSource({"train": make_split(700), "test": make_split(70, 1)}), val_fraction=0.2)
    dm.setup("fit")
    assert (len(dm.splits["train"]), len(dm.splits["val"]), len(dm.splits["test"])) == (560, 140, 70)


def test_datamodule_batches_are_uint8_until_transfer_then_float_pixels():
    dm = FERDataModule(FixedSource({"Training": make_split(100), "PublicTest": make_split(30, 1)}), batch_size=32)
    dm.setup("fit")
    images, labels, index = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (32, 48, 48) and len(labels) == len(index) == 32
    out, _, _ = dm.on_after_batch_transfer((images, labels, index), 0)
    assert out.dtype == torch.float32 and out.shape == (32, 1, 48, 48)
    assert torch.equal(out[:, 0], images.float()), "no augmentation outside training"


def test_empty_split_is_an_error():
    empty = SplitArrays(torch.zeros(0, 48, 48, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    dm = FERDataModule(FixedSource({"Training": make_split(10), "PublicTest": empty}))
    with pytest.raises(ValueError, match="val split .*empty"):
        dm.setup("fit")


def test_dataset_normalisation_statistics():
    dm = FERDataModule(FixedSource({"Training": make_split(50), "PublicTest": make_split(5)}), normalize="dataset")
    dm.setup("fit")
    mean, std = dm.input_mean_std
    pixels = dm.splits["train"].images.float()
    assert mean == pytest.approx(pixels.mean().item()) and std == pytest.approx(pixels.std().item())
    assert FERDataModule(FixedSource({}), normalize="symmetric").input_mean_std == (127.5, 127.5)
    with pytest.raises(ValueError, match="normalize"):
        FERDataModule(FixedSource({}), normalize="bogus")


def test_crop_size_center_crops_evaluation_batches():
    dm = FERDataModule(
        FixedSource({"Training": make_split(10), "PublicTest": make_split(5)}), augment=BatchAugment(crop_size=40)
    )
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    images, _, _ = dm.on_after_batch_transfer(batch, 0)
    assert images.shape[-2:] == (40, 40)
    assert torch.equal(images[:, 0], batch[0][:, 4:44, 4:44].float())


def test_augmented_grid_png_has_a_row_per_class(tmp_path):
    from PIL import Image

    from fer_lightning.data.preview import save_augmented_grid

    dm = FERDataModule(
        FixedSource({"Training": make_split(70), "PublicTest": make_split(7, 1)}),
        augment=BatchAugment(rotation=10, hflip=True),
    )
    path = save_augmented_grid(dm, tmp_path / "grid.png", per_class=4)
    width, height = Image.open(path).size
    assert height > width > 0, "7 rows of 4 samples"


def test_train_side_shrinks_training_batches_only():
    dm = FERDataModule(FixedSource({"Training": make_split(64), "PublicTest": make_split(16, 1)}), batch_size=32)
    dm.setup("fit")
    batch, val_batch = next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))
    dm.trainer = SimpleNamespace(training=True, global_step=0, global_rank=0)
    dm.train_side = 32
    images, _, _ = dm.on_after_batch_transfer(batch, 0)
    assert images.shape == (32, 1, 32, 32)
    # Only the size changes: a flat face keeps its pixel value.
    flat = (torch.full_like(batch[0], 90), *batch[1:])
    assert torch.allclose(dm.on_after_batch_transfer(flat, 0)[0], torch.tensor(90.0))
    dm.trainer.training = False
    images, _, _ = dm.on_after_batch_transfer(val_batch, 0)
    assert images.shape[-2:] == (48, 48), "validation sees full-size faces"
