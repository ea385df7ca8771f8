"""The leaderboard on hand-made run dirs: every state a run can be found in, none of them an error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from fer_lightning.compare import count_parameters, differing, find_runs, leaderboard, main
from fer_lightning.models.cnn3 import CNN3
from fer_lightning.training.run_status import read_status

CNN3_CONFIG = {"_target_": "fer_lightning.models.cnn3.CNN3", "num_classes": 7, "padding": 0, "dropout": 0.0}


def make_run(
    path: Path,
    overrides: list[str] | None = None,
    val_acc: list[float] | None = None,
    test_acc: float | None = None,
    status: dict | None = None,
    hydra: bool = True,
) -> Path:
    path.mkdir(parents=True)
    if hydra:
        (path / ".hydra").mkdir()
        (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))
        (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"model": CNN3_CONFIG}))
    else:
        (path / "config.yaml").write_text(yaml.safe_dump({"model": CNN3_CONFIG}))
    if val_acc is not None:
        rows = [
            {"epoch": e, "step": e, "train/loss": 1.0, "val/acc": None, "val/f1_macro": None}
            for e in range(len(val_acc))
        ]
        rows += [{"epoch": e, "step": e, "val/acc": v, "val/f1_macro": v / 2} for e, v in enumerate(val_acc)]
        pd.DataFrame(rows).to_csv(path / "metrics.csv", index=False)
    if test_acc is not None:
        (path / "metrics.json").write_text(json.dumps({"test/acc": test_acc, "test/f1_macro": test_acc / 2}))
    if status is not None:
        (path / "status.json").write_text(json.dumps(status))
    return path


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """A logs dir with a sweep of five runs in every state, and a single run elsewhere."""
    sweep = tmp_path / "train" / "multiruns" / "s"
    host = socket.gethostname()
    done = {"status": "completed", "wall_time_s": 12.5}
    make_run(sweep / "0", ["seed=0", "optimizer.lr=0.001"], [0.3, 0.5, 0.4], 0.45, done)
    make_run(sweep / "1", ["seed=0", "optimizer.lr=0.01"], [0.2, 0.6], 0.55, done)
    make_run(sweep / "2", ["seed=0", "optimizer.lr=-1"], status={"status": "failed", "error": "ValueError: lr"})
    running = {"status": "running", "host": host, "pid": os.getpid()}
    make_run(sweep / "10", ["seed=0", "optimizer.lr=0.1"], [0.1], status=running)
    make_run(sweep / "3", ["seed=0", "optimizer.lr=0.2"], [0.15], status={**running, "pid": dead_pid()})
    (sweep / "1" / "wandb" / "offline-run-x" / "files").mkdir(parents=True)
    (sweep / "1" / "wandb" / "offline-run-x" / "files" / "config.yaml").write_text("a: 1\n")
    make_run(tmp_path / "train" / "runs" / "single", val_acc=[0.35], test_acc=0.3, hydra=False)
    (tmp_path / "train" / "runs" / "empty").mkdir()  # not a run: no config
    return tmp_path


def test_finds_run_dirs_but_not_inside_them(logs):
    names = [p.relative_to(logs).as_posix() for p in find_runs(logs)]
    assert names == [
        "train/multiruns/s/0",
        "train/multiruns/s/1",
        "train/multiruns/s/2",
        "train/multiruns/s/3",
        "train/multiruns/s/10",
        "train/runs/single",
    ], "natural order, and the W&B dir's config.yaml is no run"


def test_every_state_is_a_row(logs):
    table, curves = leaderboard(logs / "train" / "multiruns" / "s")
    rows = table.set_index("run")
    assert list(table["run"]) == ["1", "0", "3", "10", "2"], "best val/acc first, no val/acc last"
    assert dict(rows["status"]) == {"0": "completed", "1": "completed", "2": "failed", "3": "crashed", "10": "running"}
    assert list(table.columns[:3]) == ["run", "status", "optimizer.lr"], "seed is the same everywhere"
    assert rows.loc["0", "val/acc"] == 0.5 and rows.loc["0", "best_epoch"] == 1 and rows.loc["0", "epochs"] == 3
    assert rows.loc["0", "val/f1_macro"] == 0.25 and rows.loc["1", "test/acc"] == 0.55
    assert rows.loc["0", "wall_time_s"] == 12.5
    assert pd.isna(rows.loc["2", "val/acc"]) and rows.loc["2", "error"] == "ValueError: lr"
    assert rows.loc["2", "epochs"] == 0
    assert (table["params"] == sum(p.numel() for p in CNN3().parameters())).all()
    assert list(curves["0"]) == [0.3, 0.5, 0.4]


def test_status_is_inferred_without_status_json(logs):
    table, _ = leaderboard(logs / "train" / "runs")
    assert list(table["run"]) == ["single"] and table["status"][0] == "completed"
    (logs / "train" / "runs" / "single" / "metrics.json").unlink()
    assert leaderboard(logs / "train" / "runs")[0]["status"][0] == "unknown"


def test_read_status_spots_a_dead_process(tmp_path):
    run = make_run(tmp_path / "r", status={"status": "running", "host": socket.gethostname(), "pid": dead_pid()})
    assert read_status(run)["status"] == "crashed"
    (run / "status.json").write_text("{not json")
    assert read_status(run) is None, "a half-written status is no error"


def test_half_written_metrics_csv_is_no_error(tmp_path):
    run = make_run(tmp_path / "r", val_acc=[0.2])
    (run / "metrics.csv").write_text("")
    table, _ = leaderboard(tmp_path)
    assert len(table) == 1 and pd.isna(table["val/acc"][0])


def test_cli_writes_the_files_and_sorts(logs, tmp_path, capsys):
    out = tmp_path / "out"
    table = main([str(logs), "--sort", "test/acc", "--out", str(out)])
    assert len(table) == 6 and table["test/acc"].iloc[0] == 0.55
    printed = capsys.readouterr().out
    assert "| run" in printed and "6 runs" in printed
    assert pd.read_csv(out / "leaderboard.csv")["run"].iloc[0] == "train/multiruns/s/1"
    assert "crashed" in (out / "leaderboard.md").read_text()
    assert (out / "val_acc_curves.png").stat().st_size > 0
    ascending = main([str(logs), "--sort", "val/acc", "--ascending", "--out", str(out)])
    assert ascending["val/acc"].iloc[0] == 0.1
    with pytest.raises(SystemExit, match="cannot sort"):
        main([str(logs), "--sort", "nope", "--out", str(out)])


def test_empty_dir_and_helpers(tmp_path, capsys):
    assert main([str(tmp_path)]).empty and "(no runs)" in capsys.readouterr().out
    assert differing([{"a": "1", "b": "2"}, {"a": "1", "b": "3"}, {"a": "1"}]) == ["b"]
    assert count_parameters({"_target_": "no.such.Model"}) != count_parameters({"_target_": "no.such.Model"})  # NaN
    assert count_parameters(CNN3_CONFIG) == sum(p.numel() for p in CNN3().parameters())
    assert not torch.is_tensor(count_parameters(CNN3_CONFIG))
