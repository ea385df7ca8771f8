"""What every benchmark row shares: the row type, the composed train config, fixed data, clocks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from fer_lightning import resolvers
from fer_lightning.conf import CONF_DIR
from fer_lightning.data.splits import SplitArrays
from fer_lightning.labels import EMOTIONS

ROOT = Path(__file__).resolve().parents[1]
FER_TRAIN, FER_VAL = 28_709, 3_589  # FER-2013 Training and PublicTest sizes


class Row(NamedTuple):
    """One line of the table. ``ratio`` is "times better than the baseline": above 1 means better."""

    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    note: str = ""


def compose_train_config(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """conf/train.yaml as train.py sees it, without a Hydra run (so the output dir is given, not made)."""
    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir='{output_dir}'"])


def quiet_trainer(val_batches: int = 0) -> list[str]:
    """Overrides that keep a timed fit to the work itself: no checkpoints, logger, bar, sanity check or test."""
    return [
        "~callbacks",
        "~logger",
        "test=false",
        f"++trainer.limit_val_batches={val_batches}",
        "++trainer.num_sanity_val_steps=0",
        "++trainer.enable_progress_bar=false",
        "++trainer.enable_checkpointing=false",
        "++trainer.enable_model_summary=false",
    ]


class FixedSource:
    """A data source that hands back splits already in memory: every row reuses one set of drawn faces."""

    class_names = EMOTIONS
    label_mode = "majority"

    def __init__(self, splits: dict[str, SplitArrays]) -> None:
        self.splits = splits

    def load(self) -> dict[str, SplitArrays]:
        return self.splits


def head(split: SplitArrays, n: int) -> SplitArrays:
    if n > len(split):
        raise ValueError(f"the face pool holds {len(split)} images, {n} asked for")
    return SplitArrays(split.images[:n], split.labels[:n])


class EpochClock(L.Callback):
    """Times whole training epochs, start to start, so each includes Lightning's epoch-end work.

    ``between`` runs at every epoch end with its time left out: the baseline's epochs interleave with ours.
    """

    def __init__(self, between: Callable[[], object] | None = None) -> None:
        self.between = between
        self.starts: list[float] = []
        self.paused: list[float] = []
        self.images: list[int] = []
        self.end = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())
        self.paused.append(0.0)
        self.images.append(0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images[-1] += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.between is not None:
            start = time.perf_counter()
            self.between()
            self.paused[-1] += time.perf_counter() - start

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = time.perf_counter()

    def rates(self, warmup: int = 1) -> list[float]:
        """Images per second of every epoch after the first ``warmup`` ones."""
        bounds = [*self.starts, self.end]
        return [self.images[i] / (bounds[i + 1] - bounds[i] - self.paused[i]) for i in range(warmup, len(self.starts))]


class BatchClock(L.Callback):
    """Steady-state seconds per training and validation batch; the first batch of each is warm-up.

    Training stops (``trainer.should_stop``) once ``min_batches`` were timed over at least
    ``min_seconds``, so a slow model costs a few batches and a fast one enough for a stable figure.
    Lightning still validates after a requested stop, which times the validation batches.
    On a GPU ``synchronize`` makes each stamp wait for the batch's kernels, not just their launch.
    """

    def __init__(self, min_batches: int, min_seconds: float, synchronize: bool = False) -> None:
        self.min_batches, self.min_seconds, self.synchronize = min_batches, min_seconds, synchronize
        self.train: list[float] = []
        self.val: list[float] = []

    def _now(self) -> float:
        if self.synchronize:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train.append(self._now())
        timed = len(self.train) - 1
        if timed >= self.min_batches and self.train[-1] - self.train[0] >= self.min_seconds:
            trainer.should_stop = True

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.append(self._now())

    @staticmethod
    def per_batch(stamps: list[float]) -> tuple[float, int]:
        """(mean seconds per batch after the first, batches timed)."""
        if len(stamps) < 2:
            raise RuntimeError("fewer than 2 batches ran: nothing to time after the warm-up batch")
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1), len(stamps) - 1


def interleaved_rates(epoch_fns: dict[str, Callable[[int], int]], rounds: int, min_seconds: float) -> dict[str, float]:
    """Median items/s of each pipeline over ``rounds`` rounds in which the pipelines take turns.

    An epoch function trains or loads one epoch and returns what it counts (batches, images). Each gets
    one untimed warm-up epoch (page cache, worker imports, allocator); then every round times whole epochs
    of each, for at least ``min_seconds`` per pipeline. Taking turns puts a slow spell of a shared machine
    on both sides, where timing one pipeline after the other put it on one side only.
    """
    for epoch_fn in epoch_fns.values():
        epoch_fn(0)
    rates: dict[str, list[float]] = {name: [] for name in epoch_fns}
    epoch = 0
    for _ in range(rounds):
        for name, epoch_fn in epoch_fns.items():
            start, items = time.perf_counter(), 0
            while not items or time.perf_counter() - start < min_seconds:
                epoch += 1
                items += epoch_fn(epoch)
            rates[name].append(items / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
