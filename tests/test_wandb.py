"""What W&B (offline) and TensorBoard recorded for the jobs of a real multirun, read back from their files.

wandb 0.31 writes no wandb-summary.json offline and no longer ships a Python reader for its run file, so
``read_wandb_run`` parses ``run-<id>.wandb`` itself: LevelDB-log framing (32 KiB blocks, 7-byte record
headers) around ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from fer_lightning.labels import EMOTIONS
from fer_lightning.training.wandb_reports import WandbReports, confusion_rows
from tests.helpers.sweeps import GRID_JOBS, grid_sweep

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class WandbRun:
    run: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[Any] = field(default_factory=list)
    exit_code: int | None = None
    files: Path = Path()


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def _records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK
            continue
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def read_wandb_run(run_dir: Path) -> WandbRun:
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    out = WandbRun(files=path.parent / "files")
    for record in _records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.run = record.run
        elif kind == "config":
            out.config.update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "summary":
            out.summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "history":
            out.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "artifact":
            out.artifacts.append(record.artifact)
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
    return out


def media(run: WandbRun, key: str) -> Path:
    """The file a media summary entry points at (an image, a table) in the run's files/."""
    return run.files / run.summary[f"{key}/path"]


def table_artifact(run: WandbRun, key: str) -> tuple[dict[str, Any], dict[str, Path]]:
    """A logged table as W&B will upload it: the run_table artifact's JSON and its files (the faces) by path.

    The copy in files/media/table names its images only "Image"; the artifact's copy points at them.
    """
    (artifact,) = [a for a in run.artifacts if a.type == "run_table" and key.replace("/", "") in a.name]
    files = {entry.path: Path(entry.local_path) for entry in artifact.manifest.contents}
    (table,) = [path for name, path in files.items() if name.endswith(".table.json")]
    return json.loads(table.read_text()), files


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    sweep, result = grid_sweep(tmp_path_factory.getbasetemp() / "grid")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep, result


@pytest.fixture(scope="module")
def wandb_runs(grid) -> dict[int, WandbRun]:
    sweep, _ = grid
    return {job: read_wandb_run(sweep / str(job)) for job in GRID_JOBS}


COMPLETED = [job for job, (_, lr) in GRID_JOBS.items() if lr != "-1"]


def test_every_job_is_its_own_run_in_the_sweep_group(grid, wandb_runs):
    sweep, _ = grid
    assert len({r.run.run_id for r in wandb_runs.values()}) == 4, "wandb.finish between jobs: no run reused"
    for job, run in wandb_runs.items():
        assert run.run.project == "fer-lightning" and run.run.run_group == sweep.name
        assert run.exit_code == (1 if GRID_JOBS[job][1] == "-1" else 0), "failed jobs end their W&B run failed"


@pytest.mark.parametrize("job", COMPLETED)
def test_config_and_summary_reach_wandb(grid, wandb_runs, job):
    sweep, _ = grid
    run, (seed, lr) = wandb_runs[job], GRID_JOBS[job]
    assert run.config["seed"] == int(seed) and run.config["optimizer"]["lr"] == float(lr)
    assert run.config["model"]["_target_"].endswith("CNN3") and "label_smoothing" in run.config["module"]
    assert run.config["net"]["_target_"].endswith("CNN3"), "the module's hyperparameters too"
    report = json.loads((sweep / str(job) / "metrics.json").read_text())
    for name in EMOTIONS:
        for score in ("precision", "recall", "f1"):
            assert f"val/{score}/{name}" in run.summary
            assert run.summary[f"test/{score}/{name}"] == pytest.approx(report[f"test/{score}/{name}"], abs=1e-6)
    assert run.summary["test/acc"] == pytest.approx(report["test/acc"], abs=1e-6)
    history = pd.read_csv(sweep / str(job) / "metrics.csv")
    assert run.summary["val/acc"] == pytest.approx(history["val/acc"].dropna().iloc[-1], abs=1e-6)


@pytest.mark.parametrize("job", COMPLETED)
def test_confusion_matrices_reach_wandb(grid, wandb_runs, job):
    sweep, _ = grid
    run = wandb_runs[job]
    assert sum("val/confusion_matrix/_type" in row for row in run.history) == 2, "one image per validation epoch"
    for key in ("val/confusion_matrix", "test/confusion_matrix"):
        assert run.summary[f"{key}/_type"] == "image-file"
        assert Image.open(media(run, key)).size[0] > 500
    chart = json.loads(media(run, "test/confusion_chart_table").read_text())
    assert chart["columns"] == ["Actual", "Predicted", "nPredictions"] and len(chart["data"]) == 49
    predictions = pd.read_csv(sweep / str(job) / "predictions.csv")
    expected = pd.crosstab(predictions["true"], predictions["predicted"]).reindex(
        index=range(7), columns=range(7), fill_value=0
    )
    for actual, predicted, count in chart["data"]:
        assert count == expected.loc[EMOTIONS.index(actual), EMOTIONS.index(predicted)]


@pytest.mark.parametrize("job", COMPLETED)
def test_predictions_and_per_class_tables_reach_wandb(grid, wandb_runs, job):
    sweep, _ = grid
    run = wandb_runs[job]
    table, files = table_artifact(run, "test/predictions")
    assert run.summary["test/predictions/nrows"] == len(table["data"])
    assert table["columns"] == ["index", "face", "true", "predicted", "confidence", "correct"]
    expected = pd.read_csv(sweep / str(job) / "predictions.csv").set_index("index")
    assert len(table["data"]) == min(64, len(expected))
    for index, face, true, predicted, confidence, correct in table["data"]:
        assert true == EMOTIONS[expected.loc[index, "true"]] and predicted == EMOTIONS[expected.loc[index, "predicted"]]
        assert confidence == pytest.approx(expected.loc[index, f"p_{predicted}"], abs=1e-3)
        assert correct == (true == predicted)
        assert Image.open(files[face["path"]]).size == (48, 48)
    per_class = json.loads(media(run, "test/per_class").read_text())
    report = json.loads((sweep / str(job) / "metrics.json").read_text())
    assert [row[0] for row in per_class["data"]] == list(EMOTIONS)
    for name, precision, recall, f1 in per_class["data"]:
        for score, value in (("precision", precision), ("recall", recall), ("f1", f1)):
            assert value == pytest.approx(report[f"test/{score}/{name}"], abs=1e-6)


@pytest.mark.parametrize("job", COMPLETED)
def test_best_checkpoint_is_a_model_artifact_when_log_model_is_on(wandb_runs, job):
    models = [a for a in wandb_runs[job].artifacts if a.type == "model"]
    assert any("best" in a.aliases for a in models)


@pytest.mark.parametrize("job", COMPLETED)
def test_tensorboard_has_the_curves(grid, job):
    sweep, _ = grid
    events = EventAccumulator(str(sweep / str(job) / "tensorboard")).Reload()
    assert {"val/acc", "val/f1_macro", "val/f1/happy", "train/acc"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("val/acc")) == 2


# ---- configs and the callback without a run ----------------------------------------------------------
def test_logger_configs(make_cfg):
    cfg = make_cfg("logger=wandb")
    assert set(cfg.logger) == {"csv", "wandb"}, "the leaderboard reads the CSV logger's metrics.csv"
    assert cfg.logger.wandb.project == "fer-lightning" and cfg.logger.wandb.log_model is False
    assert cfg.logger.wandb.group is None, "a single run belongs to no group"
    assert cfg.callbacks.wandb_reports._target_ == "fer_lightning.training.wandb_reports.WandbReports"
    assert "model_checkpoint" in cfg.callbacks, "the default callbacks stay"
    many = make_cfg("logger=many")
    assert set(many.logger) == {"csv", "tensorboard", "wandb"} and "wandb_reports" in many.callbacks
    assert set(make_cfg("logger=tensorboard").logger) == {"csv", "tensorboard"}
    assert "wandb_reports" not in make_cfg().callbacks


def test_callback_does_nothing_without_a_wandb_logger():
    trainer = SimpleNamespace(loggers=[], sanity_checking=False, is_global_zero=True, current_epoch=0, global_step=0)
    module = SimpleNamespace(confusion={"val": torch.eye(7), "test": torch.eye(7)}, class_names=EMOTIONS)
    callback = WandbReports()
    callback.on_validation_end(trainer, module)
    callback.on_test_epoch_start(trainer, module)
    outputs = {"probs": torch.full((2, 7), 1 / 7), "labels": torch.zeros(2, dtype=torch.long), "index": torch.arange(2)}
    callback.on_test_batch_end(trainer, module, outputs, (torch.zeros(2, 1, 48, 48),), 0)
    callback.on_test_end(trainer, module)
    assert callback._rows == []
    rows = confusion_rows(torch.tensor([[2, 1], [0, 3]]), ["a", "b"])
    assert rows == [["a", "a", 2], ["a", "b", 1], ["b", "a", 0], ["b", "b", 3]]
