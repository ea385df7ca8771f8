"""Learning-rate schedules that torch.optim does not ship ready-made."""

from __future__ import annotations

import functools
import math
import time

import lightning as L
from lightning.pytorch.callbacks import Timer
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup_cosine_factor(step: int, total_steps: int, warmup_fraction: float, min_lr_ratio: float) -> float:
    warmup = int(warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.0, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warm-up to the base LR over ``warmup_fraction`` of training, then cosine decay.

    torch's CosineAnnealingLR has no warm-up and chaining it with SequentialLR breaks the
    step count on resume, so this is one LambdaLR whose factor depends on the step alone.
    """
    return LambdaLR(
        optimizer,
        functools.partial(
            _warmup_cosine_factor, total_steps=total_steps, warmup_fraction=warmup_fraction, min_lr_ratio=min_lr_ratio
        ),
    )


class WallClockCosine(LambdaLR):
    """Warm-up + cosine over a wall-clock budget: the LR reaches its floor when the time is up.

    For recipes judged by a time budget (``cpu_speedrun``): a step-based schedule sized on one
    machine is cut off mid-decay on a slower or busier one. Progress is the larger of the elapsed
    fraction of the budget and of ``total_steps``, so the schedule also ends if the epochs run out
    first. Pair it with ``trainer.max_time``. The time used travels in the scheduler's state, so a run
    resumed from a checkpoint goes on where the schedule was, as ``trainer.max_time``'s Timer does.
    Not bitwise reproducible: it depends on the clock.
    """

    # Settings and this process's clock: kept out of the saved state.
    _NOT_SAVED = ("total_steps", "budget_seconds", "warmup_fraction", "min_lr_ratio", "seconds_before", "clock_start")

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        budget_minutes: float,
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.0,
    ) -> None:
        self.total_steps, self.budget_seconds = total_steps, budget_minutes * 60
        self.warmup_fraction, self.min_lr_ratio = warmup_fraction, min_lr_ratio
        self.seconds_before, self.clock_start = 0.0, time.monotonic()
        super().__init__(optimizer, self.factor)

    def elapsed_seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.clock_start

    def factor(self, step: int) -> float:
        progress = max(self.elapsed_seconds() / self.budget_seconds, step / max(1, self.total_steps))
        # The cosine over 10,000 virtual steps, so the time fraction maps onto warmup_cosine's shape.
        return _warmup_cosine_factor(int(min(1.0, progress) * 10_000), 10_000, self.warmup_fraction, self.min_lr_ratio)

    def state_dict(self) -> dict:
        # LambdaLR's own state (step count, last LRs) plus the time used; the clock itself means nothing elsewhere.
        # The settings stay out, so a resumed run follows the budget and step count its own config gives.
        state = {k: v for k, v in super().state_dict().items() if k not in self._NOT_SAVED}
        return {**state, "elapsed_seconds": self.elapsed_seconds()}

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        # A checkpoint written before the time was saved resumes with the clock at 0, as it used to.
        self.seconds_before, self.clock_start = state.pop("elapsed_seconds", 0.0), time.monotonic()
        super().load_state_dict(state)


# The name the configs (and earlier checkpoints' hyperparameters) use.
wall_clock_cosine = WallClockCosine


def training_progress(trainer: L.Trainer) -> float:
    """How far training has gone, 0..1: the larger of the steps done and, under ``max_time``, the time used.

    The same two clocks ``wall_clock_cosine`` follows, so a switch at a fraction of training (SAM's
    ``start``) lands at the same point of its LR schedule on a fast machine and on a slow one.
    """
    progress = trainer.global_step / max(1, trainer.estimated_stepping_batches)
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is not None:
        elapsed = timer.time_elapsed("train")
        progress = max(progress, elapsed / max(1e-9, elapsed + remaining))
    return min(1.0, progress)
