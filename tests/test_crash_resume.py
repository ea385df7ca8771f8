"""A run killed with SIGKILL mid-training resumes from its last.ckpt into a new run dir and ends exactly where an
uninterrupted run with the same seed ends; the killed run's directory is left byte for byte as the kill left it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from fer_lightning.train import train
from fer_lightning.training.run_status import read_status
from tests.conftest import ROOT, TINY_DATA
from tests.helpers.sweeps import environment

EPOCHS = 4
OVERRIDES = [
    *TINY_DATA,
    "++trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
    f"trainer.max_epochs={EPOCHS}",
    "seed=5",
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def val_acc(run: Path) -> pd.Series:
    history = pd.read_csv(run / "metrics.csv")
    return history.dropna(subset=["val/acc"]).groupby("epoch")["val/acc"].last()


@pytest.mark.slow
def test_kill_9_mid_training_then_resume_matches_an_uninterrupted_run(make_cfg, tmp_path):
    killed = tmp_path / "killed"
    env = {**environment(tmp_path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "train.py", *OVERRIDES, f"hydra.run.dir={killed}", f"paths.log_dir={tmp_path / 'logs'}"]
    with open(tmp_path / "killed.out", "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # The uninterrupted run, in this process, while the other one starts.
        reference = train(make_cfg(*OVERRIDES[len(TINY_DATA) + 2 :], run="reference"))
        last = killed / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 300
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        output = tmp_path / "killed.out"
        assert process.poll() is None, f"the run ended before it could be killed:\n{output.read_text()}"
        os.kill(process.pid, signal.SIGKILL)  # right after its first last.ckpt: in the middle of the next epoch
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    stopped_at = torch.load(last, weights_only=True, mmap=True)["epoch"]
    assert stopped_at < EPOCHS - 1, "the kill came before the last epoch"
    assert read_status(killed)["status"] == "crashed", "a killed run shows as crashed, not as running"
    before = snapshot(killed)

    resumed = train(make_cfg(*OVERRIDES[len(TINY_DATA) + 2 :], f"ckpt_path={last}", run="resumed"))

    assert snapshot(killed) == before, "the killed run's directory is untouched"
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    for run in (reference_dir, resumed_dir):
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["epoch"] == EPOCHS - 1
    curve, resumed_curve = val_acc(reference_dir), val_acc(resumed_dir)
    assert list(resumed_curve.index) == list(range(stopped_at + 1, EPOCHS)), "only the missing epochs are trained"
    assert resumed_curve.to_numpy() == pytest.approx(curve.loc[resumed_curve.index].to_numpy(), abs=1e-6)
    for name in ("val/acc", "val/loss", "train/loss", "test/acc", "test/f1_macro"):
        assert resumed[name] == pytest.approx(reference[name], rel=1e-5, abs=1e-6), name
    report, resumed_report = (json.loads((run / "metrics.json").read_text()) for run in (reference_dir, resumed_dir))
    assert resumed_report["epoch"] == report["epoch"]
    assert resumed_report["test/acc"] == pytest.approx(report["test/acc"], abs=1e-6)


def test_resumed_checkpoint_callback_keeps_the_earlier_runs_best(tmp_path):
    """Resumed into a new dir, the best score and file of the earlier run still count (Lightning forgets them),
    so the resumed run tests what an uninterrupted one would; the earlier file is only read."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fer_lightning.training.callbacks import RunCheckpoint

    old_best = tmp_path / "old" / "checkpoints" / "epoch_001.ckpt"
    old_best.parent.mkdir(parents=True)
    old_best.write_bytes(b"weights")
    state = {
        "dirpath": str(old_best.parent),
        "best_model_path": str(old_best),
        "best_model_score": torch.tensor(0.9),
        "best_k_models": {str(old_best): torch.tensor(0.9)},
        "kth_best_model_path": str(old_best),
        "kth_value": torch.tensor(0.9),
    }
    callback = RunCheckpoint(dirpath=str(tmp_path / "new"), monitor="val/acc", mode="max")
    callback.load_state_dict(state)
    assert callback.best_model_path == str(old_best) and float(callback.best_model_score) == pytest.approx(0.9)
    plain = ModelCheckpoint(dirpath=str(tmp_path / "new"), monitor="val/acc", mode="max")
    assert callback.state_key == plain.state_key, "checkpoints of either class resume with either"
    old_best.unlink()
    forgetful = RunCheckpoint(dirpath=str(tmp_path / "new"), monitor="val/acc", mode="max")
    forgetful.load_state_dict(state)
    assert forgetful.best_model_score is None, "a best file that is gone is not kept"


def test_mixup_cutmix_and_dropout_resume_exactly(make_cfg, tmp_path):
    """They draw from torch's global generator, which no checkpoint holds: it is seeded per step."""
    from fer_lightning.train import train

    extra = ["model=cnn3", "model.dropout=0.3", "module.mixup_alpha=0.2", "module.cutmix_alpha=0.2", "seed=3"]
    train(make_cfg(*extra, "trainer.max_epochs=2", run="full"))
    train(make_cfg(*extra, "trainer.max_epochs=1", "test=false", run="half"))
    last = tmp_path / "half" / "checkpoints" / "last.ckpt"
    train(make_cfg(*extra, "trainer.max_epochs=2", f"ckpt_path={last}", run="resumed"))
    full, resumed = (
        torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True) for r in ("full", "resumed")
    )
    for name, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name
