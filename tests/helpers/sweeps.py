"""Real ``python train.py -m`` multiruns on tiny synthetic data, each run once per test session.

Starting Python with torch and Lightning is most of a tiny run's time on a busy machine, so one multirun
serves several tests: test_sweeps checks its dirs, statuses and leaderboard, test_wandb what W&B and
TensorBoard recorded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

TINY = [
    "data.source.train_size=224",
    "data.source.val_size=56",
    "data.source.test_size=56",
    "debug=limit",
    "callbacks.progress_bar=null",
    "++trainer.enable_progress_bar=false",
]
# seed=0,1 x optimizer.lr=1e-3,-1: Adam refuses lr=-1 when the optimizer is built, so jobs 1 and 3 raise
# mid-sweep and jobs 2 and 3 run after a failure. logger=many: CSV + TensorBoard + W&B (offline) in every job.
GRID = ["seed=0,1", "optimizer.lr=1e-3,-1", "logger=many", "logger.wandb.log_model=true"]
GRID_JOBS = {0: ("0", "0.001"), 1: ("0", "-1"), 2: ("1", "0.001"), 3: ("1", "-1")}  # job: (seed, lr)

# Optuna's first invocation: 3 one-epoch trials into a fresh SQLite study (test_sweeps resumes it).
OPTUNA = ["hparams_search=optuna", "hydra.sweeper.study_name=tiny", "trainer.max_epochs=1", "test=false", *TINY]

_started: dict[str, tuple[Path, list[str], subprocess.Popen]] = {}
_finished: dict[str, subprocess.CompletedProcess] = {}


def environment(base: Path) -> dict[str, str]:
    """W&B offline and quiet, every W&B and cache dir inside ``base``."""
    env = dict(os.environ)
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_CONSOLE="off",
        WANDB_DISABLE_CODE="true",
        WANDB_DISABLE_GIT="true",
        WANDB_CONFIG_DIR=str(base / "wandb_config"),
        WANDB_CACHE_DIR=str(base / "wandb_cache"),
        WANDB_DATA_DIR=str(base / "wandb_data"),
        FER_LIGHTNING_CACHE=str(base / "cache"),
        HYDRA_FULL_ERROR="1",
    )
    return env


def start_train(name: str, base: Path, *args: str) -> None:
    """Start ``python train.py *args`` in the background (once per session), output to files in ``base``.

    Two tiny multiruns side by side finish in about the time of one: most of each is importing Lightning.
    """
    if name in _started:
        return
    base.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "train.py", *args, f"paths.log_dir={base / 'logs'}"]
    with open(base / f"{name}.out", "w") as out, open(base / f"{name}.err", "w") as err:
        process = subprocess.Popen(command, cwd=ROOT, env=environment(base), stdout=out, stderr=err, text=True)
    _started[name] = (base, command, process)


def wait_train(name: str, timeout: int = 900) -> subprocess.CompletedProcess:
    if name not in _finished:
        base, command, process = _started[name]
        process.wait(timeout=timeout)
        out, err = ((base / f"{name}.{kind}").read_text() for kind in ("out", "err"))
        _finished[name] = subprocess.CompletedProcess(command, process.returncode, out, err)
    return _finished[name]


def run_train(base: Path, *args: str, name: str | None = None) -> subprocess.CompletedProcess:
    name = name or f"run{len(_started)}"
    start_train(name, base, *args)
    return wait_train(name)


def start_grid(base: Path) -> Path:
    sweep = base / "sweep"
    start_train("grid", base, "-m", *GRID, *TINY, f"hydra.sweep.dir={sweep}")
    return sweep


def grid_sweep(base: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """The 2x2 multirun with two failing jobs; returns its sweep dir and the finished process."""
    sweep = start_grid(base)
    return sweep, wait_train("grid")


def start_optuna(base: Path) -> None:
    start_train("optuna", base, *OPTUNA, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={base / 's1'}")
