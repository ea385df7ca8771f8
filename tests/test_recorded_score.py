"""The test score a training run records is the score ``evaluate`` gives the checkpoint it names (issue 40)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from fer_lightning.compare import TEST_SCORES, leaderboard
from fer_lightning.evaluate import evaluate
from fer_lightning.train import train
from tests.conftest import ROOT, TINY_DATA, compose_config

# An average that starts at once and lags far behind, so the live and averaged weights score differently; bf16
# autocast, as AMX CPUs train by default, while the test after fit, like evaluate, runs in fp32.
EMA = [
    "callbacks=ema",
    "callbacks.ema.update_starting_at_step=0",
    "callbacks.ema.decay=0.9",
    "trainer.precision=bf16-mixed",
]


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
    assert recorded["precision"] == "32-true"
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


def train_py(*args: str, cwd: Path, multirun: bool = False) -> None:
    """``python train.py ARGS`` as a user runs it: the CLI's own Hydra run or sweep dirs, DDP's relaunch."""
    quiet = ["callbacks.progress_bar=null", "++trainer.enable_progress_bar=false"]
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *(["--multirun"] if multirun else []),
            *TINY_DATA,
            *quiet,
            *EMA,
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "FER_LOG_DIR": str(cwd / "logs")},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_ddp_ema_run_records_its_checkpoints_score(tmp_path):
    run = tmp_path / "ddp"
    train_py("trainer=ddp_sim", "trainer.max_epochs=2", f"hydra.run.dir={run}", cwd=tmp_path)
    recorded, scored = recorded_and_evaluated(run, tmp_path)
    assert recorded["averaged_weights"] is True
    assert recorded["test/acc"] == pytest.approx(scored, abs=1e-4)


@pytest.mark.slow
def test_multirun_jobs_and_their_leaderboard_rows_record_their_checkpoints_scores(tmp_path):
    sweep = tmp_path / "sweep"
    train_py(
        "optimizer.lr=0.001,0.003", "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path, multirun=True
    )
    table, _ = leaderboard(sweep)
    assert sorted(table["run"]) == ["0", "1"]
    for job in ("0", "1"):
        recorded, scored = recorded_and_evaluated(sweep / job, tmp_path / f"eval_{job}")
        assert recorded["test/acc"] == pytest.approx(scored, abs=1e-4)
        row = table.set_index("run").loc[job]
        assert {m: row[m] for m in TEST_SCORES} == {m: recorded[m] for m in TEST_SCORES}
