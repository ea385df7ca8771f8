"""Row 1: augmented training batches per second, FERDataModule vs a typical torchvision ImageFolder pipeline."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from fer_lightning.bench_common import FixedSource, Row, compose_train_config, quiet_trainer
from fer_lightning.data.datamodule import FERDataModule
from fer_lightning.data.splits import EMOTIONS, SplitArrays

BATCH = 64
TARGET = 20.0  # the goal: at least 20x the batches per second of the ImageFolder pipeline


def write_image_folder(split: SplitArrays, root: Path) -> Path:
    """The faces as ``root/train/<class>/<i>.png``, the layout ImageFolder (and msambare/fer2013) uses."""
    train = root / "train"
    for name in EMOTIONS:
        (train / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(split.images.numpy(), split.labels.tolist())):
        Image.fromarray(image).save(train / EMOTIONS[label] / f"{i:05d}.png")
    return train


def _batches_per_second(epoch_fn: Callable[[int], int], epochs: int, min_seconds: float) -> float:
    """One untimed warm-up epoch (page cache, worker imports, allocator), then at least ``epochs`` timed ones
    lasting at least ``min_seconds`` together: a fast pipeline's epoch is too short to time alone."""
    epoch_fn(0)
    start, batches, epoch = time.perf_counter(), 0, 0
    while epoch < epochs or time.perf_counter() - start < min_seconds:
        epoch += 1
        batches += epoch_fn(epoch)
    return batches / (time.perf_counter() - start)


def datamodule_rate(split: SplitArrays, epochs: int, min_seconds: float, workdir: Path) -> float:
    """The trainer-less path of a training step's data: loader, on_after_batch_transfer, then the augmentation.

    Without a trainer ``on_after_batch_transfer`` only converts to float, so the augmentation is called
    here the way the datamodule calls it in training (one seeded generator per batch).
    """
    cfg = compose_train_config([*quiet_trainer(), f"data.batch_size={BATCH}"], workdir)
    datamodule: FERDataModule = instantiate(cfg.data)
    datamodule.source = FixedSource({"Training": split, "PublicTest": split, "PrivateTest": split})
    datamodule.setup("fit")
    if not datamodule.augment.moves_pixels:
        raise RuntimeError("the data config's augmentation is off: nothing to benchmark")

    def epoch(number: int) -> int:
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(number)
        count = 0
        for batch in loader:
            images, labels, index = datamodule.on_after_batch_transfer(batch, 0)
            augmented = datamodule.augment(images, datamodule._batch_generator(images.device, index))
            if count == 0 and torch.equal(augmented, images):
                raise RuntimeError("the augmentation left the batch unchanged")
            count += 1
        return count

    return _batches_per_second(epoch, epochs, min_seconds)


def image_folder_rate(folder: Path, epochs: int, min_seconds: float) -> float:
    """The usual FER tutorial pipeline: per-image PIL decode and transforms in 2 DataLoader workers."""
    transform = transforms.Compose(
        [
            transforms.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            transforms.RandomHorizontalFlip(),
            transforms.Grayscale(),
            transforms.ToTensor(),
        ]
    )
    loader = DataLoader(
        datasets.ImageFolder(str(folder), transform=transform), batch_size=BATCH, shuffle=True, num_workers=2
    )

    def epoch(number: int) -> int:
        return sum(1 for _ in loader)

    return _batches_per_second(epoch, epochs, min_seconds)


def loader_rows(faces: SplitArrays, epochs: int, min_seconds: float, workdir: Path) -> list[Row]:
    folder = write_image_folder(faces, workdir / "images")
    ours = datamodule_rate(faces, epochs, min_seconds, workdir / "dm")
    theirs = image_folder_rate(folder, epochs, min_seconds)
    return [
        Row(
            f"Augmented train batches/s (batch {BATCH}, seed recipe): FERDataModule",
            ours,
            "batches/s",
            theirs,
            ours / theirs,
            f"baseline: ImageFolder + torchvision transforms, DataLoader(num_workers=2), same {len(faces):,} faces "
            f"as PNGs; >= {epochs} epoch(s) and >= {min_seconds:g} s each after a warm-up epoch; "
            f"target ratio >= {TARGET:.0f}",
        )
    ]
