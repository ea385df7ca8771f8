"""SAM: the step it takes, when it switches on, and what a checkpoint keeps of it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Timer
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from fer_lightning.train import train
from fer_lightning.training.module import FERClassifier
from fer_lightning.training.sam import SAM
from fer_lightning.training.schedules import training_progress


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(5, 3), torch.randn(8, 5), torch.randint(0, 3, (8,))


def _closure(optimizer: torch.optim.Optimizer, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        return loss

    return closure


def test_step_applies_the_gradient_taken_rho_uphill():
    model, x, y = _problem()
    w = [p.detach().clone() for p in model.parameters()]
    loss_at_w = _loss(model, x, y)
    grads = torch.autograd.grad(loss_at_w, list(model.parameters()))
    norm = torch.cat([g.flatten() for g in grads]).norm()
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads, strict=True):
            p.add_(0.3 * g / norm)
    uphill = torch.autograd.grad(_loss(model, x, y), list(model.parameters()))
    assert not all(torch.allclose(g, g0) for g, g0 in zip(uphill, grads, strict=True)), "the test needs a curved loss"
    with torch.no_grad():
        for p, w0 in zip(model.parameters(), w, strict=True):
            p.copy_(w0)

    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.3, lr=0.5)
    loss = optimizer.step(_closure(optimizer, model, x, y))
    assert torch.isclose(loss, loss_at_w), "the step reports the loss at w"
    for p, w0, g in zip(model.parameters(), w, uphill, strict=True):
        assert torch.allclose(p, w0 - 0.5 * g, atol=1e-6), "SGD's step with the gradient at w + rho g/|g|, from w"


def test_before_its_start_a_step_is_the_base_optimizers_own():
    model, x, y = _problem()
    twin, _, _ = _problem()
    sam = SAM(model.parameters(), torch.optim.SGD, start=0.5, lr=0.1, momentum=0.9, nesterov=True)
    sgd = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    assert not sam.active
    for _ in range(3):
        sam.step(_closure(sam, model, x, y))
        sgd.step(_closure(sgd, twin, x, y))
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_checkpoint_keeps_the_momentum_and_schedulers_still_reach_the_base():
    model, x, y = _problem()
    sam = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    sam.step(_closure(sam, model, x, y))
    saved = sam.state_dict()
    assert all("momentum_buffer" in state for state in saved["state"].values())

    restored = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    restored.load_state_dict(saved)
    for p in model.parameters():
        momentum = restored.base_optimizer.state[p]["momentum_buffer"]
        assert torch.equal(momentum, sam.base_optimizer.state[p]["momentum_buffer"])
    LambdaLR(restored, lambda step: 0.25)
    assert restored.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


@pytest.mark.parametrize(("kwargs", "message"), [({"rho": 0.0}, "must be positive"), ({"start": 1.5}, r"in \[0, 1\]")])
def test_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SAM(nn.Linear(2, 2).parameters(), torch.optim.SGD, lr=0.1, **kwargs)


def test_training_takes_the_second_pass_from_its_start_and_after_resume(make_cfg, tmp_path, monkeypatch):
    calls = []
    training_step = FERClassifier.training_step
    monkeypatch.setattr(FERClassifier, "training_step", lambda self, *a: calls.append(1) or training_step(self, *a))
    common = ("optimizer=sam", "optimizer.start=0.5", "test=false")
    train(make_cfg(*common, "trainer.max_epochs=2", run="sam"))
    assert len(calls) == 7 + 2 * 7, "448 faces / 64 = 7 steps an epoch: one pass each in epoch 1, two in epoch 2"

    calls.clear()
    last = tmp_path / "sam" / "checkpoints" / "last.ckpt"
    train(make_cfg(*common, "trainer.max_epochs=3", f"ckpt_path={last}", run="sam_resumed"))
    assert len(calls) == 2 * 7, "the resumed third epoch is past the start: two passes a step"


def test_progress_is_the_larger_of_steps_and_time_under_max_time(monkeypatch):
    timer = Timer(duration="00:00:01:00")
    monkeypatch.setattr(timer, "time_elapsed", lambda stage: 45.0)
    monkeypatch.setattr(timer, "time_remaining", lambda stage: 15.0)
    trainer = SimpleNamespace(global_step=10, estimated_stepping_batches=100, callbacks=[timer])
    assert training_progress(trainer) == pytest.approx(0.75), "three quarters of the time used"
    trainer.global_step = 90
    assert training_progress(trainer) == pytest.approx(0.9), "the steps run out first"
    trainer.callbacks = []
    trainer.global_step = 30
    assert training_progress(trainer) == pytest.approx(0.3), "no time limit: steps alone"
