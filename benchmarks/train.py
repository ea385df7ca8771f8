"""Lightning's training throughput against a plain PyTorch loop, the compact network's two stems, seconds per epoch."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from benchmarks.common import (
    FER_TRAIN,
    FER_VAL,
    BatchClock,
    EpochClock,
    FixedSource,
    Row,
    compose_train_config,
    head,
    interleaved_rates,
    median,
    quiet_trainer,
)
from fer_lightning.data.splits import SplitArrays
from fer_lightning.resolvers import best_precision
from fer_lightning.train import build

MAX_LOSS = 0.10  # the goal: the framework costs at most 10% of a plain loop's throughput


def _autocast(precision: str) -> AbstractContextManager:
    """The autocast Lightning's precision plugin would enter on the CPU for ``precision``."""
    dtypes = {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16, "16-mixed": torch.float16}
    return torch.autocast("cpu", dtype=dtypes[precision]) if precision in dtypes else nullcontext()


class PlainLoop:
    """The same training by hand: same net, augmentation, normalisation, optimizer, batch and precision.

    An epoch does everything a training step of ``FERClassifier`` does that a hand-written loop would also
    do (shuffle, index, augment with a per-batch generator, normalise, forward, loss, backward, step, count
    correct predictions) and nothing else, so the gap to Lightning's throughput is the framework's cost.
    """

    def __init__(self, faces: SplitArrays, cfg: DictConfig) -> None:
        torch.manual_seed(cfg.seed)
        self.channels_last = cfg.module.channels_last
        self.net = instantiate(cfg.model)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.optimizer = instantiate(cfg.optimizer)(params=self.net.parameters())
        self.augment = instantiate(cfg.data.augment)
        self.mean, self.std = torch.tensor(0.0), torch.tensor(255.0)  # data.normalize=unit, as the module does it
        self.precision, self.batch, self.faces = cfg.trainer.precision, cfg.data.batch_size, faces
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self.step = 0

    def epoch(self) -> float:
        """Train one epoch; returns its images per second."""
        start = time.perf_counter()
        return self.train_epoch() / (time.perf_counter() - start)

    def train_epoch(self) -> int:
        """Train one epoch; returns the number of images trained."""
        images, labels = self.faces.images, self.faces.labels
        usable = len(labels) - len(labels) % self.batch
        self.net.train()
        correct = torch.zeros((), dtype=torch.long)
        order = torch.randperm(len(labels), generator=self.shuffle)
        for first in range(0, usable, self.batch):
            index = order[first : first + self.batch]
            x = self.augment(
                images.index_select(0, index).unsqueeze(1).float(), torch.Generator().manual_seed(self.step)
            )
            x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = labels[index]
            with _autocast(self.precision):
                logits = self.net(x)
            loss = F.cross_entropy(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            correct += (logits.argmax(1) == y).sum()
            self.step += 1
        correct.item()
        return usable


def framework_rows(faces: SplitArrays, epochs: int, workdir: Path) -> list[Row]:
    """cnn3 images/s through ``build(cfg)`` + ``trainer.fit`` against ``PlainLoop``, epochs interleaved.

    A plain epoch runs after each Lightning epoch (its time is left out of Lightning's), so both sides
    see the same machine: on a shared machine the load drifts, and back-to-back runs would compare it.
    The first epoch of each side is warm-up.
    """
    cfg = compose_train_config([*quiet_trainer(), "model=cnn3", f"trainer.max_epochs={epochs + 1}"], workdir)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module, trainer = build(cfg)
    datamodule.source = FixedSource({"Training": faces, "PublicTest": head(faces, 64), "PrivateTest": head(faces, 64)})
    plain = PlainLoop(faces, cfg)
    plain_rates: list[float] = []
    clock = EpochClock(between=lambda: plain_rates.append(plain.epoch()))
    trainer.callbacks.append(clock)
    trainer.fit(module, datamodule=datamodule)
    ours, theirs = median(clock.rates(warmup=1)), median(plain_rates[1:])
    return [
        Row(
            "cnn3 training images/s: train.py's Lightning path",
            ours,
            "images/s",
            theirs,
            ours / theirs,
            f"baseline: plain PyTorch loop, same {len(faces):,} in-memory faces, model, BatchAugment, Adam, batch "
            f"{cfg.data.batch_size}, {cfg.trainer.precision}; median of {epochs} epoch(s) each, interleaved, after "
            f"a warm-up one; target ratio >= {1 - MAX_LOSS:.2f}",
        )
    ]


def stem_rows(faces: SplitArrays, epochs: int, workdir: Path) -> list[Row]:
    """cpu_speedrun's training images/s with ``model.stem=space_to_depth`` against the anti-aliased conv stem.

    Both are trained by :class:`PlainLoop` (the framework's cost is the same for both), epochs taking
    turns so that both see the same machine; the first epoch of each is warm-up. In the CPU's default
    precision and, where that is bf16 (CPUs with AMX), in fp32 too: the gain differs between the two.
    """
    recipe = [*quiet_trainer(), "experiment=cpu_speedrun", "model.antialias=true"]
    rows = []
    for precision in dict.fromkeys([best_precision("cpu"), "32-true"]):  # PlainLoop trains on the CPU
        loops = {
            stem: PlainLoop(
                faces,
                compose_train_config(
                    [*recipe, f"model.stem={stem}", f"trainer.precision={precision}"], workdir / f"{stem}-{precision}"
                ),
            )
            for stem in ("conv", "space_to_depth")
        }
        rates = interleaved_rates(
            {stem: lambda _epoch, loop=loop: loop.train_epoch() for stem, loop in loops.items()}, epochs, 0.0
        )
        ours, theirs = rates["space_to_depth"], rates["conv"]
        rows.append(
            Row(
                f"compact training images/s, cpu_speedrun + model.antialias=true, {precision}: "
                "model.stem=space_to_depth",
                ours,
                "images/s",
                theirs,
                ours / theirs,
                f"baseline: model.stem=conv; plain PyTorch loop, same {len(faces):,} in-memory faces, augmentation, "
                f"SGD, batch {loops['conv'].batch}; median of {epochs} epoch(s) each, in turns, after a warm-up one",
            )
        )
    return rows


def epoch_time_rows(
    model: str,
    faces: SplitArrays,
    train_images: int,
    accelerator: str,
    min_batches: int,
    min_seconds: float,
    val_batches: int,
    eval_batch: int,
    workdir: Path,
) -> list[Row]:
    """One model config's steady-state train and val batch times, scaled to a FER-2013 epoch.

    ``faces`` is the whole drawn pool: the GPU's validation batch (512) can ask for more faces than the
    ``train_images`` that training takes from it.
    """
    overrides = [
        *quiet_trainer(val_batches=val_batches + 1),
        f"model={model}",
        "trainer.max_epochs=1",
        f"trainer.accelerator={accelerator}",
        f"data.eval_batch_size={eval_batch}",
        f"data.on_device={str(accelerator == 'gpu').lower()}",
    ]
    cfg = compose_train_config(overrides, workdir / f"{model}-{accelerator}")
    datamodule, module, trainer = build(cfg)
    val = head(faces, (val_batches + 1) * eval_batch)
    datamodule.source = FixedSource({"Training": head(faces, train_images), "PublicTest": val, "PrivateTest": val})
    clock = BatchClock(min_batches, min_seconds, synchronize=accelerator == "gpu")
    trainer.callbacks.append(clock)
    trainer.fit(module, datamodule=datamodule)
    train_batch, timed_train = clock.per_batch(clock.train)
    val_batch, timed_val = clock.per_batch(clock.val)
    batch = cfg.data.batch_size
    seconds = train_batch * (FER_TRAIN // batch) + val_batch / eval_batch * FER_VAL
    note = (
        f"measured over {timed_train} train batches of {batch} + {timed_val} val batches of {eval_batch}, "
        f"scaled to {FER_TRAIN:,} + {FER_VAL:,} images; {cfg.trainer.precision}"
    )
    return [Row(f"FER-2013 epoch, model={model} ({accelerator})", seconds, "s/epoch", note=note)]
