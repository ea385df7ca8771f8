"""The test score a training run records is the score ``evaluate`` gives the checkpoint it names (issue 40)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from fer_lightning.evaluate import evaluate
from fer_lightning.train import train
from tests.conftest import TINY_DATA, compose_config

# An average that starts at once and lags far behind, so the live and averaged weights score differently.
EMA = ["callbacks=ema", "callbacks.ema.update_starting_at_step=0", "callbacks.ema.decay=0.9"]


def recorded_and_evaluated(run: Path, tmp_path: Path) -> tuple[dict, float]:
    recorded = json.loads((run / "metrics.json").read_text())
    scored = evaluate(
        compose_config([*TINY_DATA, f"ckpt_path={recorded['ckpt_path']}"], tmp_path / "eval", config_name="eval")
    )
    # Accuracy alone can tie on tiny data: the probabilities tell two sets of weights apart.
    ours, theirs = (pd.read_csv(d / "predictions.csv").filter(like="p_").to_numpy() for d in (run, tmp_path / "eval"))
    assert abs(ours - theirs).max() < 1e-4, "the run tested other weights than its checkpoint's"
    return recorded, scored["test/acc"]


@pytest.mark.parametrize("averaging", [EMA, []], ids=["ema", "plain"])
def test_recorded_test_score_is_the_named_checkpoints(make_cfg, tmp_path, averaging):
    train(make_cfg("trainer.max_epochs=3", "seed=0", *averaging, run="r"))
    recorded, scored = recorded_and_evaluated(tmp_path / "r", tmp_path)
    assert recorded["averaged_weights"] is bool(averaging)
    assert recorded["test/acc"] == pytest.approx(scored, abs=1e-4)
    if averaging:  # the check bites: the file's live weights are not the averaged ones it is scored with
        checkpoint = torch.load(recorded["ckpt_path"], weights_only=True)
        live, averaged = checkpoint["current_model_state"], checkpoint["state_dict"]
        assert any(not torch.equal(live[k], averaged[k]) for k in averaged if averaged[k].is_floating_point())


def test_resumed_ema_run_records_its_checkpoints_score(make_cfg, tmp_path):
    train(make_cfg("trainer.max_epochs=2", "seed=0", "test=false", *EMA, run="r"))
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    train(make_cfg("trainer.max_epochs=4", "seed=0", f"ckpt_path={last}", *EMA, run="r2"))
    recorded, scored = recorded_and_evaluated(tmp_path / "r2", tmp_path)
    assert recorded["averaged_weights"] is True
    assert recorded["test/acc"] == pytest.approx(scored, abs=1e-4)
