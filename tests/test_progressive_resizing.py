"""ProgressiveResizing: the side it picks through training, and a run that trains at those sides."""

from __future__ import annotations

import pandas as pd
import pytest

from fer_lightning.train import train
from fer_lightning.training.callbacks import ProgressiveResizing

RESIZE = "+callbacks.progressive_resizing"
WITH_RESIZING = (f"{RESIZE}._target_=fer_lightning.training.callbacks.ProgressiveResizing", f"{RESIZE}.start=0.0")


def test_side_grows_from_min_to_max_in_whole_multiples():
    resize = ProgressiveResizing(min_side=32, max_side=48, start=0.25, end=0.65, multiple=8)
    sides = [resize.side_at(p / 20) for p in range(21)]
    assert sides == [32] * 9 + [40] * 4 + [48] * 8
    assert ProgressiveResizing(min_side=36, max_side=48, multiple=8).side_at(0.0) == 36, "never below min_side"


@pytest.mark.parametrize(
    "kwargs", [{"min_side": 0}, {"min_side": 56}, {"multiple": 0}, {"start": 0.7, "end": 0.6}, {"end": 1.5}]
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
