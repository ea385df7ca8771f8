"""Multiruns: one dir per job, failures isolated and recorded, Optuna studies that resume, the SLURM launcher."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from fer_lightning import compare
from fer_lightning.training import run_status as runs
from hydra_plugins.fer_optuna_sweeper._impl import distribution, fail_orphaned_trials, search_space, trial_value
from tests.conftest import CONF
from tests.helpers.sweeps import GRID_JOBS, OPTUNA, grid_sweep, run_train, start_optuna, wait_train


@pytest.fixture(scope="module")
def optuna_base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "optuna"


@pytest.fixture(scope="module")
def grid(tmp_path_factory, optuna_base) -> tuple[Path, subprocess.CompletedProcess]:
    start_optuna(optuna_base)  # runs alongside the grid; test_optuna_study_runs_then_resumes waits for it
    return grid_sweep(tmp_path_factory.getbasetemp() / "grid")


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


# ---- the grid multirun ---------------------------------------------------------------------------
@pytest.mark.slow
def test_every_combination_runs_in_its_own_dir(grid):
    sweep, result = grid
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    for job, (seed, lr) in GRID_JOBS.items():
        overrides = yaml.safe_load((sweep / str(job) / ".hydra" / "overrides.yaml").read_text())
        assert f"seed={seed}" in overrides and f"optimizer.lr={lr}" in overrides
        assert _status(sweep / str(job))["pid"] == _status(sweep / "0")["pid"], "one process ran the sweep"


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(grid):
    sweep, _ = grid
    for job, (_, lr) in GRID_JOBS.items():
        status = _status(sweep / str(job))
        assert status["ended_at"] and status["wall_time_s"] >= 0
        if lr == "-1":
            assert status["status"] == "failed"
            assert "Invalid learning rate" in status["error"] and "Traceback" in status["traceback"]
            assert "Invalid learning rate" in (sweep / str(job) / "train.log").read_text()
        else:
            assert status["status"] == "completed", status
            history = pd.read_csv(sweep / str(job) / "metrics.csv")
            assert status["objective"] == pytest.approx(history["val/acc"].dropna().iloc[-1])
            assert (sweep / str(job) / "metrics.json").is_file()
    assert _status(sweep / "2")["started_at"] >= _status(sweep / "1")["ended_at"], "job 2 ran after job 1 failed"


def test_leaderboard_of_the_sweep(grid, tmp_path, capsys):
    sweep, _ = grid
    table = compare.main([str(sweep), "--out", str(tmp_path)])
    assert "4 runs" in capsys.readouterr().out
    assert len(table) == 4
    assert list(table["status"]) == ["completed", "completed", "failed", "failed"], "failed runs sort last"
    assert {"seed", "optimizer.lr"} <= set(table.columns)
    assert "logger" not in table.columns, "only overrides that differ between the runs"
    done = table[table["status"] == "completed"]
    assert done["val/acc"].between(0, 1).all() and done["test/acc"].between(0, 1).all()
    assert (done["epochs"] == 2).all() and (table["params"] > 0).all()
    failed = table[table["status"] == "failed"]
    assert failed["val/acc"].isna().all() and failed["error"].str.contains("Invalid learning rate").all()
    assert table["val/acc"].iloc[0] >= table["val/acc"].iloc[1]
    for name in ("leaderboard.csv", "leaderboard.md", "val_acc_curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert len(pd.read_csv(tmp_path / "leaderboard.csv")) == 4


# ---- the entry point's bookkeeping, in process -----------------------------------------------------
def _cfg(tmp_path: Path, metric: str = "val/acc"):
    return OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}, "optimized_metric": metric})


def test_a_single_run_still_raises(tmp_path):
    def boom(cfg):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        runs.run_recorded(_cfg(tmp_path), boom)
    assert _status(tmp_path / "run")["status"] == "failed"


def test_an_interrupted_run_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "is_multirun", lambda: True)

    def ctrl_c(cfg):
        raise SystemExit(1)  # what Lightning raises after its graceful shutdown on Ctrl-C

    with pytest.raises(SystemExit):
        runs.run_recorded(_cfg(tmp_path), ctrl_c)
    assert _status(tmp_path / "run")["status"] == "interrupted"


def test_a_multirun_job_returns_nan(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "is_multirun", lambda: True)
    value = runs.run_recorded(_cfg(tmp_path, "val/f1_macro"), lambda cfg: {"val/acc": 0.5})
    assert math.isnan(value)
    assert "val/f1_macro" in _status(tmp_path / "run")["error"], "an objective that was never logged fails"


def test_completed_run_returns_its_metric_and_keeps_earlier_status(tmp_path):
    assert runs.run_recorded(_cfg(tmp_path), lambda cfg: {"val/acc": 0.25}) == 0.25
    status = _status(tmp_path / "run")
    assert status["status"] == "completed" and status["objective"] == 0.25
    with pytest.raises(FileExistsError):
        runs.run_recorded(_cfg(tmp_path), lambda cfg: {"val/acc": 0.5})
    assert _status(tmp_path / "run") == status, "a second run into the same dir leaves the first one's status"


# ---- Optuna ------------------------------------------------------------------------------------------
def test_optuna_study_runs_then_resumes_from_sqlite(optuna_base):
    tmp_path = optuna_base
    storage = f"sqlite:///{tmp_path / 'logs' / 'optuna' / 'tiny.db'}"
    start_optuna(tmp_path)
    first = wait_train("optuna")
    assert first.returncode == 0, first.stderr[-3000:]
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.direction.name == "MAXIMIZE"
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:
        run = tmp_path / "s1" / str(trial.number)
        assert trial.user_attrs["output_dir"] == str(run)
        assert trial.value == _status(run)["objective"]
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        assert f"optimizer.lr={trial.params['optimizer.lr']}" in overrides
        assert set(trial.params) == {
            "optimizer.lr",
            "optimizer.weight_decay",
            "data.batch_size",
            "model.dropout",
            "module.label_smoothing",
            "data.augment.rotation",
            "data.augment.shift",
            "data.augment.zoom",
        }
    results = yaml.safe_load((tmp_path / "s1" / "optimization_results.yaml").read_text())
    assert results["best_value"] == study.best_value

    second = run_train(tmp_path, *OPTUNA, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path / 's2'}")
    assert second.returncode == 0, second.stderr[-3000:]
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) == 4 and study.trials[3].state == TrialState.COMPLETE
    assert (tmp_path / "s2" / "3" / "status.json").is_file(), "job number = trial number"
    assert study.trials[3].params != study.trials[0].params, "the seeded sampler does not replay trial 0"


def test_search_space_from_override_syntax():
    parse = OverridesParser.create().parse_override
    assert distribution(parse("a=interval(0, 20)")) == FloatDistribution(0.0, 20.0), "Hydra parses bounds as floats"
    assert distribution(parse("a=tag(int, log, interval(1, 64))")) == IntDistribution(1, 64, log=True)
    space, fixed = search_space(
        [
            "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
            "data.batch_size=choice(32, 64)",
            "seed=range(0, 10, 3)",
            "model.nonexistent=interval(0.0, 1.0)",
            "+extra=choice(a, b)",
            "trainer.max_epochs=3",
            "data.batch_size=choice(16, 128)",  # the CLI comes after the config's params: it wins
        ],
        _hydra_cfg(),
    )
    assert space == {
        "optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "data.batch_size": CategoricalDistribution([16, 128]),
        "seed": IntDistribution(0, 9, step=3),
        "+extra": CategoricalDistribution(["a", "b"]),
    }
    assert fixed == {"trainer.max_epochs": "3"}


def test_trials_of_a_dead_sweeper_are_failed_and_bad_values_fail():
    study = optuna.create_study()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan, alive = study.ask(), study.ask()
    for trial, pid in ((orphan, int(dead.stdout)), (alive, os.getpid())):
        trial.set_user_attr("sweeper_host", socket.gethostname())
        trial.set_user_attr("sweeper_pid", pid)
    assert fail_orphaned_trials(study) == 1
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING]

    class Job:
        def __init__(self, value):
            self._value = value

        @property
        def return_value(self):
            if isinstance(self._value, Exception):
                raise self._value
            return self._value

    assert trial_value(Job(0.5)) == (0.5, None)
    for bad in (float("nan"), None, ValueError("x")):
        assert trial_value(Job(bad))[0] is None


def test_optuna_sweeper_plugin_is_found():
    assert "OptunaSweeper" in {cls.__name__ for cls in Plugins.instance().discover(Sweeper)}


# ---- SLURM -------------------------------------------------------------------------------------------
def _hydra_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_composes_and_renders_an_sbatch_script():
    assert {"SlurmLauncher", "LocalLauncher"} <= {cls.__name__ for cls in Plugins.instance().discover(Launcher)}
    plain = _hydra_cfg("hydra/launcher=submitit_slurm").hydra.launcher
    assert plain._target_.endswith("SlurmLauncher") and plain.gpus_per_node is None
    cfg = _hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90")
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = launcher.params
    assert (params["partition"], params["gpus_per_node"], params["timeout_min"]) == ("gpu", 1, 90)

    from submitit.slurm.slurm import _make_sbatch_string  # what submitit would hand to sbatch

    script = _make_sbatch_string(
        command="python train.py",
        folder="/tmp/submitit/%j",
        partition=params["partition"],
        time=params["timeout_min"],
        gpus_per_node=params["gpus_per_node"],
        cpus_per_task=params["cpus_per_task"],
        ntasks_per_node=params["tasks_per_node"],
        mem=f"{params['mem_gb']}GB",
        array_parallelism=params["array_parallelism"],
        map_count=4,
    )
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--cpus-per-task=8", "--array=0-3%4"):
        assert line in script, line
