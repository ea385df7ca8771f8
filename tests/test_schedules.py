"""The learning-rate schedules: their shape, and a wall-clock schedule that resumes where it was."""

from __future__ import annotations

import math

import pytest
import torch

from fer_lightning.train import train
from fer_lightning.training import schedules
from fer_lightning.training.schedules import wall_clock_cosine, warmup_cosine


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(schedules.time, "monotonic", fake)
    return fake


def _optimizer() -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def _lr(scheduler) -> float:
    return scheduler.get_last_lr()[0]


def _step(scheduler) -> None:
    scheduler.optimizer.step()  # the order torch expects (no gradient: the weights stay put)
    scheduler.step()


def test_warmup_cosine_warms_up_then_decays_to_the_floor():
    scheduler = warmup_cosine(_optimizer(), total_steps=100, warmup_fraction=0.1, min_lr_ratio=0.01)
    lrs = [_lr(scheduler)]
    for _ in range(100):
        _step(scheduler)
        lrs.append(_lr(scheduler))
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0), "linear warm-up over 10 steps"
    assert lrs[55] == pytest.approx(0.01 + 0.99 * 0.5), "half-way down the cosine"
    assert lrs[100] == pytest.approx(0.01)


def test_wall_clock_cosine_follows_the_time_or_the_steps_whichever_is_further(clock):
    scheduler = wall_clock_cosine(_optimizer(), total_steps=1000, budget_minutes=1, warmup_fraction=0.0)
    assert _lr(scheduler) == pytest.approx(1.0)
    clock.now += 30
    _step(scheduler)
    assert _lr(scheduler) == pytest.approx(0.5), "half the budget used: half-way down"
    for _ in range(899):
        _step(scheduler)
    assert _lr(scheduler) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9))), "the steps are ahead of the time"
    clock.now += 30
    _step(scheduler)
    assert _lr(scheduler) == 0.0, "the budget is spent"


def test_wall_clock_cosine_resumes_with_the_time_already_used(clock):
    scheduler = wall_clock_cosine(_optimizer(), total_steps=10_000, budget_minutes=1, warmup_fraction=0.0)
    clock.now += 30
    _step(scheduler)
    state = scheduler.state_dict()
    assert state["elapsed_seconds"] == pytest.approx(30)

    clock.now += 5000  # a later process: its clock has nothing to do with the first one's
    resumed = wall_clock_cosine(_optimizer(), total_steps=10_000, budget_minutes=1, warmup_fraction=0.0)
    resumed.load_state_dict(state)
    _step(resumed)
    assert resumed.last_epoch == 2, "the step count came back"
    assert _lr(resumed) == pytest.approx(0.5), "30 of 60 s were used before the resume"
    clock.now += 15
    _step(resumed)
    assert _lr(resumed) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))


def test_wall_clock_cosine_resumed_takes_its_budget_from_its_own_config(clock):
    scheduler = wall_clock_cosine(_optimizer(), total_steps=10_000, budget_minutes=1, warmup_fraction=0.0)
    clock.now += 30
    state = scheduler.state_dict()
    longer = wall_clock_cosine(_optimizer(), total_steps=10_000, budget_minutes=2, warmup_fraction=0.0)
    longer.load_state_dict(state)
    _step(longer)
    assert _lr(longer) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25))), "30 s of a 2-minute budget"


def test_wall_clock_cosine_loads_a_state_saved_without_the_time(clock):
    """Checkpoints written before the time was saved (a plain LambdaLR's state) resume with the clock at 0."""
    scheduler = wall_clock_cosine(_optimizer(), total_steps=10_000, budget_minutes=1, warmup_fraction=0.0)
    clock.now += 30
    state = scheduler.state_dict()
    del state["elapsed_seconds"]
    resumed = wall_clock_cosine(_optimizer(), total_steps=10_000, budget_minutes=1, warmup_fraction=0.0)
    resumed.load_state_dict(state)
    _step(resumed)
    assert _lr(resumed) == pytest.approx(1.0)


def test_a_wall_clock_run_keeps_its_time_in_the_checkpoint_and_resumes_with_it(make_cfg, tmp_path, monkeypatch):
    common = ("scheduler=wall_clock", "scheduler.builder.budget_minutes=60", "++trainer.max_time=00:01:00:00")
    train(make_cfg(*common, "test=false", "trainer.max_epochs=1", run="first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    used = torch.load(last, weights_only=False)["lr_schedulers"][0]["elapsed_seconds"]
    assert 0 < used < 600

    loaded = []
    load_state_dict = schedules.WallClockCosine.load_state_dict
    monkeypatch.setattr(
        schedules.WallClockCosine,
        "load_state_dict",
        lambda self, state: loaded.append(self) or load_state_dict(self, state),
    )
    train(make_cfg(*common, "test=false", "trainer.max_epochs=2", f"ckpt_path={last}", run="resumed"))
    assert len(loaded) == 1 and loaded[0].seconds_before == pytest.approx(used), (
        "the resumed clock starts at the time used"
    )
