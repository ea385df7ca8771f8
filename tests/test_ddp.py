"""train.py under DDP (2 CPU processes) leaves the same single set of artifacts as a 1-process run; bf16 on CPU.

Lightning's DDP on CPU relaunches ``train.py`` for rank 1 with the same Hydra run dir, so every file a run
writes is a chance for the two ranks to collide, and every metric a chance to count only one rank's half.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from fer_lightning.labels import EMOTIONS
from fer_lightning.train import build
from tests.conftest import ROOT, TINY_DATA

pytestmark = pytest.mark.slow  # trains or benchmarks: tens of seconds

TEST_SIZE = 112
RUN_ARGS = [
    *TINY_DATA,
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "++trainer.enable_progress_bar=false",
    "module.self_distillation=0.5",  # each rank must record the faces every rank trained on
    "optimizer=sam",  # switched on mid-run: every rank must take its second backward pass from the same step
    "optimizer.start=0.5",
]
# Files a run leaves besides Hydra's own (.hydra/, one <job>.log per process).
EXPECTED = {
    "config.yaml",
    "status.json",
    "hparams.yaml",
    "metrics.csv",
    "metrics.json",
    "classification_report.md",
    "classification_report.csv",
    "confusion_matrix.png",
    "predictions.csv",
    "checkpoints/last.ckpt",
    "checkpoints/epoch_000.ckpt",
}


def _start(trainer: str, run_dir: Path) -> subprocess.Popen:
    # One thread per process: 3 processes share the test machine's cores, and oversubscribed intra-op
    # threads slow everything several-fold. A new session lets a hung DDP run be killed with its rank 1.
    with (run_dir.parent / f"{run_dir.name}.out").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "train.py", f"trainer={trainer}", *RUN_ARGS, f"hydra.run.dir={run_dir}"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same tiny run twice, concurrently: 2-process DDP and a single process."""
    root = tmp_path_factory.mktemp("ddp")
    dirs = {"ddp": root / "ddp", "single": root / "single"}
    processes = {name: _start("ddp_sim" if name == "ddp" else "cpu", d) for name, d in dirs.items()}
    for name, process in processes.items():
        try:
            process.wait(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        output = (root / f"{name}.out").read_text()
        assert process.returncode == 0, f"{name} run failed ({process.returncode}):\n{output[-5000:]}"
    return dirs


def _files(run_dir: Path) -> set[str]:
    return {
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
    }


def test_ddp_writes_the_same_single_set_of_artifacts(runs):
    assert _files(runs["single"]) == EXPECTED
    assert _files(runs["ddp"]) == EXPECTED, "DDP: exactly one report, config, status and set of checkpoints"
    assert json.loads((runs["ddp"] / "status.json").read_text())["status"] == "completed"


def test_ddp_report_counts_every_test_image_once(runs):
    ddp, single = (pd.read_csv(runs[name] / "predictions.csv") for name in ("ddp", "single"))
    assert list(ddp["index"]) == list(range(TEST_SIZE)), "both ranks' halves, each image once, in order"
    assert list(ddp["true"]) == list(single["true"]), "row i is test image i in both runs"
    probs = ddp[[f"p_{name}" for name in EMOTIONS]].to_numpy()
    assert probs.sum(1) == pytest.approx(1.0, abs=1e-4)
    report = json.loads((runs["ddp"] / "metrics.json").read_text())
    assert report["num_samples"] == TEST_SIZE
    assert report["test/acc"] == pytest.approx((ddp["true"] == ddp["predicted"]).mean())
    table = pd.read_csv(runs["ddp"] / "classification_report.csv", index_col="class")
    assert table.loc[list(EMOTIONS), "support"].sum() == TEST_SIZE, "the confusion matrix counts all 112"


def test_ddp_logged_metrics_are_synced_across_ranks(runs):
    """What each rank logged equals the report computed from all 112 predictions, not from its own 56."""
    history = pd.read_csv(runs["ddp"] / "metrics.csv")
    assert history["val/acc"].notna().sum() == 1
    logged = history[history["test/acc"].notna()].iloc[-1]
    report = json.loads((runs["ddp"] / "metrics.json").read_text())
    for key in [k for k in report if k.startswith("test/")]:  # torchmetrics' compute() gathers the states
        assert logged[key] == pytest.approx(report[key], abs=1e-6), key
    predictions = pd.read_csv(runs["ddp"] / "predictions.csv")
    p_true = predictions[[f"p_{name}" for name in EMOTIONS]].to_numpy()[range(TEST_SIZE), predictions["true"]]
    cross_entropy = -sum(math.log(p) for p in p_true) / TEST_SIZE
    assert logged["test/loss"] == pytest.approx(cross_entropy, abs=1e-4), "self.log(sync_dist=True) means all 112"


def test_ddp_self_distillation_records_every_ranks_faces(runs):
    """Each rank trains on its own shard, and the shards change every epoch, so each rank keeps the predictions
    of all ranks: 2 ranks x 3 full batches of 64 (of 224 faces each) = 384 of the 448 training faces."""
    for name, recorded in (("ddp", 384), ("single", 448)):
        probs = torch.load(runs[name] / "checkpoints" / "last.ckpt", weights_only=True)["self_distillation_probs"]
        seen = probs.sum(-1) > 0
        assert int(seen.sum()) == recorded, name
        assert torch.allclose(probs[seen].sum(-1), torch.ones(recorded)), name


def test_ddp_sam_switches_on_at_the_same_step_on_every_rank(runs):
    """Halfway through the steps: 2 of each rank's 3, 4 of the single run's 7. Ranks that disagreed would wait
    on each other's gradient all-reduce until the run timed out."""
    for name, step in (("ddp", 2), ("single", 4)):
        logs = "".join(p.read_text() for p in runs[name].glob("*.log"))
        assert f"SAM takes over at step {step} (epoch 0)" in logs, name


def test_bf16_mixed_trains_on_cpu(make_cfg):
    """Without AMX bf16 autocast is emulated (slow) on the CPU, but it must run, in bf16."""
    cfg = make_cfg(
        "trainer=cpu", "trainer.precision=bf16-mixed", "debug=fdr", "data.batch_size=16", "data.eval_batch_size=16"
    )
    datamodule, module, trainer = build(cfg)
    dtypes: list[torch.dtype] = []
    module.net.register_forward_hook(lambda net, inputs, output: dtypes.append(output.dtype))
    trainer.fit(module, datamodule=datamodule)
    assert trainer.precision == "bf16-mixed"
    assert dtypes and set(dtypes) == {torch.bfloat16}, "the logits come out of autocast in bf16"
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert 0.0 <= float(trainer.callback_metrics["val/acc"]) <= 1.0
