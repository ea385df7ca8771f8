"""Learning-rate schedules that torch.optim does not ship ready-made."""

from __future__ import annotations

import math
import time

import lightning as L
from lightning.pytorch.callbacks import Timer
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.0, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warm-up to the base LR over ``warmup_fraction`` of training, then cosine decay.

    torch's CosineAnnealingLR has no warm-up and chaining it with SequentialLR breaks the
    step count on resume, so this is one LambdaLR whose factor depends on the step alone.
    """
    warmup = int(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def wall_clock_cosine(
    optimizer: Optimizer,
    total_steps: int,
    budget_minutes: float,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Warm-up + cosine over a wall-clock budget: the LR reaches its floor when the time is up.

    For recipes judged by a time budget (``cpu_speedrun``): a step-based schedule sized on one
    machine is cut off mid-decay on a slower or busier one. Progress is the larger of the elapsed
    fraction of the budget and of ``total_steps``, so the schedule also ends if the epochs run out
    first. Pair it with ``trainer.max_time``. Not bitwise reproducible: it depends on the clock.
    """
    start = time.monotonic()
    budget = budget_minutes * 60
    shape = warmup_cosine(
        optimizer, total_steps=10_000, warmup_fraction=warmup_fraction, min_lr_ratio=min_lr_ratio
    ).lr_lambdas[0]

    def factor(step: int) -> float:
        progress = max((time.monotonic() - start) / budget, step / max(1, total_steps))
        return shape(min(10_000, int(progress * 10_000)))

    return LambdaLR(optimizer, factor)


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
