"""ProgressiveResizing: the side it picks through training, and a run that trains at those sides."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fer_lightning.evaluate import evaluate
from fer_lightning.train import train
from fer_lightning.training.callbacks import ProgressiveResizing
from tests.conftest import TINY_DATA, compose_config

RESIZE = "+callbacks.progressive_resizing"
WITH_RESIZING = (f"{RESIZE}._target_=fer_lightning.training.callbacks.ProgressiveResizing", f"{RESIZE}.start=0.0")


def test_side_grows_from_min_to_max_in_whole_multiples():
    resize = ProgressiveResizing(min_side=32, max_side=48, start=0.25, end=0.65, multiple=8)
    sides = [resize.side_at(p / 20) for p in range(21)]
    assert sides == [32] * 9 + [40] * 4 + [48] * 8
    assert ProgressiveResizing(min_side=36, max_side=48, multiple=8).side_at(0.0) == 36, "never below min_side"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_side": 0},
        {"min_side": 56},
        {"multiple": 0},
        {"start": 0.7, "end": 0.6},
        {"end": 1.5},
        {"recalibrate_batches": -1},
    ],
)
def test_impossible_schedules_are_refused(kwargs):
    with pytest.raises(ValueError, match="progressive resizing"):
        ProgressiveResizing(**kwargs)


def test_a_run_trains_at_growing_sides_and_validates_full_size(make_cfg, tmp_path):
    train(make_cfg("model=compact", "trainer.max_epochs=3", "test=false", *WITH_RESIZING, f"{RESIZE}.end=0.6"))
    history = pd.read_csv(tmp_path / "run" / "metrics.csv")
    sides = history.dropna(subset=["train/side"]).groupby("epoch")["train/side"].first()
    assert sides.tolist() == [32.0, 40.0, 48.0]
    assert history["val/acc"].notna().sum() == 3, "validated after every epoch, at whatever side it trained"


def test_a_model_that_takes_one_size_only_is_refused_before_training(make_cfg):
    with pytest.raises(ValueError, match="does not take 32 px faces.*pools globally"):
        train(make_cfg("model=cnn3", "trainer.max_epochs=1", *WITH_RESIZING))


def test_validation_at_32_px_recalibrates_batchnorm_of_the_validated_weights_only(make_cfg, tmp_path):
    """Trained at 32 px throughout, validated at 48 px: the EMA weights being validated get 48 px BatchNorm
    statistics, no trained weight changes, and the checkpoint saved after that validation scores what was logged."""
    at_32 = (
        f"{RESIZE}._target_=fer_lightning.training.callbacks.ProgressiveResizing",
        f"{RESIZE}.start=1.0",
        f"{RESIZE}.end=1.0",
    )
    run = ("model=compact", "trainer.max_epochs=2", "test=false", "trainer.precision=32-true", "callbacks=ema")
    run = (*run, "callbacks.ema.update_starting_at_step=0", "callbacks.ema.decay=0.9", *at_32)
    train(make_cfg(*run, run="recalibrated"))
    train(make_cfg(*run, f"{RESIZE}.recalibrate_batches=0", run="as_trained"))
    recalibrated, as_trained = (
        torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        for name in ("recalibrated", "as_trained")
    )
    live = recalibrated["current_model_state"]
    assert all(torch.equal(live[k], as_trained["current_model_state"][k]) for k in live), "training was changed"
    averaged, averaged_as_trained = recalibrated["state_dict"], as_trained["state_dict"]
    statistics = [k for k in averaged if k.endswith(("running_mean", "running_var"))]
    assert statistics and all(not torch.equal(averaged[k], averaged_as_trained[k]) for k in statistics)
    weights = [k for k in averaged if k not in statistics and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(averaged[k], averaged_as_trained[k]) for k in weights)

    logged = pd.read_csv(tmp_path / "recalibrated" / "metrics.csv").dropna(subset=["val/acc"])["val/acc"].iloc[-1]
    checkpoint = tmp_path / "recalibrated" / "checkpoints" / "last.ckpt"
    scored = evaluate(compose_config([*TINY_DATA, f"ckpt_path={checkpoint}", "split=val"], tmp_path / "eval", "eval"))
    assert scored["val/acc"] == pytest.approx(logged, abs=1e-6)
