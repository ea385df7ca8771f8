"""Row 1: augmented training batches per second, FERDataModule vs a typical torchvision ImageFolder pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from benchmarks.common import FixedSource, Row, compose_train_config, interleaved_rates, quiet_trainer
from fer_lightning.data.datamodule import FERDataModule
from fer_lightning.data.splits import SplitArrays
from fer_lightning.labels import EMOTIONS
from fer_lightning.threads import torch_threads

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


def datamodule_epochs(split: SplitArrays, workdir: Path) -> Callable[[int], int]:
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

    return epoch


def image_folder_epochs(folder: Path) -> Callable[[int], int]:
    """The usual FER tutorial pipeline: per-image PIL decode and transforms in 2 DataLoader workers."""
    transform = transforms.Compose(
        [
            # Bilinear, as BatchAugment warps (RandomAffine's default is nearest).
            transforms.RandomAffine(
                degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), interpolation=transforms.InterpolationMode.BILINEAR
            ),
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

    return epoch


def on_threads(count: int, epoch_fn: Callable[[int], int]) -> Callable[[int], int]:
    """``epoch_fn`` run with ``count`` torch threads, the caller's setting restored after it."""

    def epoch(number: int) -> int:
        with torch_threads(count):
            return epoch_fn(number)

    return epoch


def loader_rows(faces: SplitArrays, rounds: int, min_seconds: float, workdir: Path) -> list[Row]:
    """FERDataModule at torch's thread count, and on one thread when that is more, vs the baseline.

    The baseline's 2 worker processes take 2 cores; the one-thread row shows what a single core does.
    """
    folder = write_image_folder(faces, workdir / "images")
    ours = datamodule_epochs(faces, workdir / "dm")
    threads = torch.get_num_threads()
    epoch_fns = {f"{threads} torch thread(s)": ours, "baseline": image_folder_epochs(folder)}
    if threads > 1:
        epoch_fns["1 torch thread(s)"] = on_threads(1, ours)
    rates = interleaved_rates(epoch_fns, rounds, min_seconds)
    theirs = rates.pop("baseline")
    note = (
        f"baseline: ImageFolder + torchvision transforms, DataLoader(num_workers=2), same {len(faces):,} faces "
        f"as PNGs; median of {rounds} round(s) taking turns, >= {min_seconds:g} s of whole epochs per side "
        f"each, after a warm-up epoch; target ratio >= {TARGET:.0f}"
    )
    return [
        Row(
            f"Augmented train batches/s (batch {BATCH}, seed recipe): FERDataModule, {threads_used}",
            rate,
            "batches/s",
            theirs,
            rate / theirs,
            note,
        )
        for threads_used, rate in rates.items()
    ]
