"""A Hydra callback that keeps every earlier run: no run or sweep starts in a directory that already holds files.

Hydra writes ``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml`` (and ``multirun.yaml`` for a sweep) before
the task runs, so a check inside ``train()`` comes too late: the earlier run's files would already be replaced.
``on_run_start`` and ``on_multirun_start`` run before Hydra writes anything. Callbacks' exceptions are turned into
warnings by Hydra, so the refusal is a ``SystemExit``: a one-line message and exit status 1.

Registered in ``conf/hydra/default.yaml`` (``hydra.callbacks.keep_earlier_runs``), so train.py, evaluate and the
data preview all get it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID")


def _launched_rank() -> int:
    """The process's rank when a launcher started it (Lightning's DDP re-runs the script into the same run dir)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def earlier_files(directory: str | Path) -> list[str]:
    """What ``directory`` already holds (names, sorted); empty when it does not exist or is empty."""
    path = Path(directory)
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def refuse_if_used(directory: str | Path, key: str) -> None:
    found = earlier_files(directory)
    if not found:
        return
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    prog = Path(sys.argv[0]).name or "fer_lightning"
    raise SystemExit(
        f"{prog}: error: {key}={directory} already holds files ({shown}); nothing was written. Leave {key} out "
        f"for a new timestamped directory, or name a new one. To resume a run, start a new one with "
        f"ckpt_path=<old run>/checkpoints/last.ckpt."
    )


class KeepEarlierRuns(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _launched_rank() == 0:
            refuse_if_used(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _launched_rank() == 0:
            refuse_if_used(config.hydra.sweep.dir, "hydra.sweep.dir")
