"""train.py's code path end to end on the real configs and tiny synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from fer_lightning.labels import EMOTIONS
from fer_lightning.train import build, train
from fer_lightning.training.run_status import run_recorded
from tests.conftest import CONF, ROOT

REPORT_FILES = (
    "metrics.json",
    "classification_report.md",
    "classification_report.csv",
    "confusion_matrix.png",
    "predictions.csv",
    "metrics.csv",
    "config.yaml",
)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_runs_fast_dev_run(make_cfg, model):
    metrics = train(make_cfg(f"model={model}", "debug=fdr"))
    assert 0.0 <= metrics["test/acc"] <= 1.0


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_every_optimizer_and_scheduler_trains(make_cfg, optimizer, scheduler):
    cfg = make_cfg(
        f"optimizer={optimizer}", f"scheduler={scheduler}", "debug=limit", "trainer.max_epochs=1", "test=false"
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_config_composes(make_cfg, trainer):
    cfg = make_cfg(f"trainer={trainer}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert cfg.trainer.precision in ("bf16-mixed", "16-mixed", "32-true")


def test_cpu_trainer_runs(make_cfg):
    assert "test/acc" in train(make_cfg("trainer=cpu", "debug=fdr"))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> tuple[Path, dict]:
    from tests.conftest import compose_config

    out = tmp_path_factory.mktemp("short") / "run"
    cfg = compose_config(
        [
            "data.source.train_size=1400",
            "data.source.val_size=280",
            "data.source.test_size=350",
            "model.batch_norm=true",
            "data/augment=none",
            "data.batch_size=32",
            "trainer.max_epochs=4",
            "++trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
        ],
        out,
    )
    return out, train(cfg)


def test_short_run_learns_and_writes_every_artifact(short_run):
    out, metrics = short_run
    assert metrics["test/acc"] > 0.4, "7 classes: chance is 0.14"
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert len(list((out / "checkpoints").glob("epoch_*.ckpt"))) == 1
    report = json.loads((out / "metrics.json").read_text())
    assert report["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    for name in EMOTIONS:
        assert f"test/f1/{name}" in report and f"val/f1/{name}" in metrics
    history = pd.read_csv(out / "metrics.csv")
    assert history["val/acc"].notna().sum() == 4


def test_report_agrees_with_predictions_csv(short_run):
    out, _ = short_run
    predictions = pd.read_csv(out / "predictions.csv")
    probs = predictions[[f"p_{name}" for name in EMOTIONS]].to_numpy()
    assert (probs.argmax(1) == predictions["predicted"]).all()
    assert probs.sum(1) == pytest.approx(1.0, abs=1e-4)
    confusion = pd.crosstab(predictions["true"], predictions["predicted"]).reindex(
        index=range(7), columns=range(7), fill_value=0
    )
    table = pd.read_csv(out / "classification_report.csv", index_col="class")
    report = json.loads((out / "metrics.json").read_text())
    assert report["test/acc"] == pytest.approx((predictions["true"] == predictions["predicted"]).mean())
    for i, name in enumerate(EMOTIONS):
        tp = confusion.loc[i, i]
        precision = tp / max(1, confusion[i].sum())
        recall = tp / max(1, confusion.loc[i].sum())
        f1 = 0 if tp == 0 else 2 * precision * recall / (precision + recall)
        assert table.loc[name, "f1"] == pytest.approx(f1, abs=1e-4)
        assert report[f"test/f1/{name}"] == pytest.approx(f1, abs=1e-4)
        assert table.loc[name, "support"] == confusion.loc[i].sum()
    assert sorted(predictions["index"]) == list(range(len(predictions)))


def test_same_seed_same_metrics(make_cfg):
    runs = [train(make_cfg("debug=limit", "seed=3", run=name)) for name in ("a", "b")]
    assert runs[0]["val/acc"] == runs[1]["val/acc"]
    assert runs[0]["train/loss"] == pytest.approx(runs[1]["train/loss"], rel=1e-6)


def test_resume_from_last_checkpoint_continues(make_cfg, tmp_path):
    first = make_cfg("debug=limit", "test=false", run="r")
    train(first)
    resumed = make_cfg(
        "debug=limit",
        "test=false",
        "trainer.max_epochs=3",
        f"ckpt_path={tmp_path / 'r' / 'checkpoints' / 'last.ckpt'}",
        run="r2",
    )
    train(resumed)
    assert torch.load(tmp_path / "r2" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    history = pd.read_csv(tmp_path / "r2" / "metrics.csv")
    assert history["epoch"].min() == 2, "the resumed run trains only the missing epoch"
    assert (tmp_path / "r" / "metrics.csv").is_file(), "the first run's history is kept"


def test_last_checkpoint_follows_every_epoch_when_validation_skips_some(make_cfg, tmp_path):
    """Validating every second epoch must not leave last.ckpt an epoch behind: resuming needs the latest one."""
    train(make_cfg("debug=limit", "test=false", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2", run="r"))
    assert torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert pd.read_csv(tmp_path / "r" / "metrics.csv")["val/acc"].notna().sum() == 1, "validated after epoch 1 only"


def test_compiled_model_trains_and_saves_plain_weights(make_cfg, tmp_path):
    """module.compile=true (torch.compile, inductor on the CPU here) trains, and its checkpoint holds the
    plain model's keys, so it loads into an uncompiled model for evaluation and export."""
    metrics = train(make_cfg("debug=limit", "trainer.max_epochs=1", "module.compile=true", "test=false"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    plain = build(make_cfg("debug=limit", run="plain"))[1].state_dict()
    assert set(state) == set(plain)


def test_refuses_to_overwrite_an_earlier_run(make_cfg):
    run_recorded(make_cfg("debug=limit", "test=false", run="same"), train)
    with pytest.raises(FileExistsError, match="already holds an earlier run"):
        run_recorded(make_cfg("debug=limit", "test=false", run="same"), train)


def test_missing_test_split_skips_testing_with_a_warning(make_cfg, caplog):
    metrics = train(make_cfg("debug=limit", "data.test_split=[nothing]"))
    assert "val/acc" in metrics and "test/acc" not in metrics
    assert "testing will be skipped" in caplog.text


def test_balanced_class_weights_and_label_smoothing(make_cfg):
    metrics = train(
        make_cfg(
            "debug=fdr",
            "module.class_weights=balanced",
            "module.label_smoothing=0.1",
            "module.mixup_alpha=0.2",
            "module.cutmix_alpha=1.0",
        )
    )
    assert "test/acc" in metrics


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_help_and_unknown_option():
    help_text = run_cli("--help").stdout
    assert "model: cnn3" in help_text and "optimizer: adam" in help_text
    bad = run_cli("model=nosuchmodel")
    assert bad.returncode != 0
    assert "nosuchmodel" in bad.stderr and "cnn3" in bad.stderr


@pytest.fixture
def tiny_fer2013_csv(tmp_path) -> Path:
    """A fer2013.csv with all three splits, so experiment configs (which use data=fer2013) can run."""
    generator = torch.Generator().manual_seed(0)
    rows = ["emotion,pixels,Usage"]
    for usage, count in (("Training", 56), ("PublicTest", 14), ("PrivateTest", 14)):
        for i in range(count):
            pixels = " ".join(map(str, torch.randint(0, 256, (48 * 48,), generator=generator).tolist()))
            rows.append(f"{i % 7},{pixels},{usage}")
    root = tmp_path / "fer2013"
    root.mkdir()
    (root / "fer2013.csv").write_text("\n".join(rows) + "\n")
    return root


# The FER+ experiments need a votes file too: tests/test_ferplus.py runs them on its own tiny copy. The distilled
# student needs a teachers' table: tests/test_distill.py.
@pytest.mark.parametrize("experiment", [e for e in options("experiment") if not e.startswith(("ferplus", "distill_"))])
def test_every_experiment_config_runs_fast_dev_run(make_cfg, tiny_fer2013_csv, experiment):
    # Small batches keep VGG and ResNet cheap; the GPU recipe runs its code path on the CPU here.
    cfg = make_cfg(
        f"experiment={experiment}",
        f"paths.data_dir={tiny_fer2013_csv}",
        "debug=fdr",
        "data.batch_size=4",
        "data.eval_batch_size=8",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "module.compile=false",
        tiny=False,
    )
    assert cfg.data.source._target_.endswith("FER2013Source")
    assert "test/acc" in train(cfg)
