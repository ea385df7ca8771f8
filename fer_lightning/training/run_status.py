"""One run's bookkeeping around ``train()``: status.json, failures that do not end a sweep, closing W&B.

Hydra's sweepers stop on a failed job (the basic sweeper raises once its batch is done, so later batches
never start; Optuna's raises at once), and the traceback reaches no run directory. ``run_recorded`` turns
a failure into NaN for the sweeper and a ``failed`` status.json with the traceback, so the other jobs run
and the leaderboard (``fer_lightning.compare``) shows what happened to every one of them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from fer_lightning.atomic import atomic_write, write_durably
from fer_lightning.resolvers import is_multirun

log = logging.getLogger("fer_lightning")

# running -> completed | failed | interrupted; read_status turns a "running" whose process is gone into crashed.
STATUS_FILE = "status.json"


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


# status.json keeps this many bytes allocated from the start (JSON padded with spaces), so that the final status of
# a run that filled the disk can still be written: over the same bytes, needing no new block.
STATUS_BYTES = 32 * 1024


def _padded_json(data: Mapping[str, Any]) -> bytes:
    """``data`` as JSON padded to ``STATUS_BYTES``; a traceback too long for that keeps its end (where the error is)."""
    data = dict(data)
    while True:
        text = json.dumps(data, indent=2, default=str).encode()
        over = len(text) + 1 - STATUS_BYTES
        if over <= 0 or not data.get("traceback"):
            return text + b" " * max(0, -over) + b"\n"
        data["traceback"] = "[...]" + data["traceback"][over + 64 :]


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write then rename, so a leaderboard reading mid-write never sees half a file. Where that cannot be done, on
    a full disk, the file ``start`` sized is overwritten in place: not atomic, but the status is not lost (on a
    copy-on-write file system, btrfs or ZFS, even that needs free space)."""
    payload = _padded_json(data)
    try:
        with atomic_write(path) as tmp:
            tmp.write_bytes(payload)
    except OSError:
        if not path.is_file() or path.stat().st_size < len(payload):
            raise
        write_durably(path, payload, mode="r+b")
        log.warning("%s: written in place (the disk is full, or its folder takes no new file)", path)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """status.json of a run dir, ``running`` turned into ``crashed`` when its process on this host is gone."""
    path = Path(run_dir) / STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid, host = status.get("pid"), status.get("host")
    if status.get("status") == "running" and host == socket.gethostname() and pid and not _process_alive(pid):
        status["status"] = "crashed"  # killed (OOM, SIGKILL, node lost) before it could write its end
    return status


class RunStatus:
    """status.json in the run dir: written when the run starts and again when it ends, by rank 0 only."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / STATUS_FILE
        self.data: dict[str, Any] = {}
        self._start = 0.0

    @property
    def started(self) -> bool:
        return bool(self.data)

    def start(self, **extra: Any) -> None:
        if rank_zero_only.rank != 0:
            return
        earlier = [self.path.parent / name for name in (STATUS_FILE, "checkpoints", "metrics.csv", "metrics.json")]
        if any(p.exists() for p in earlier):  # Lightning's CSV logger would delete an earlier metrics.csv
            raise FileExistsError(
                f"{self.path.parent} already holds an earlier run; give this run a new hydra.run.dir "
                "(to resume, pass ckpt_path=<old run>/checkpoints/last.ckpt from a new directory)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._start = time.monotonic()
        self.data = {
            "status": "running",
            "started_at": _now(),
            "ended_at": None,
            "wall_time_s": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **extra,
        }
        _write_json(self.path, self.data)

    def finish(self, status: str, **extra: Any) -> None:
        if not self.started:
            return
        self.data.update(status=status, ended_at=_now(), wall_time_s=round(time.monotonic() - self._start, 3), **extra)
        _write_json(self.path, self.data)


def finish_wandb(exit_code: int = 0) -> None:
    """End the process-wide W&B run: Lightning's WandbLogger reuses a live one, so the next multirun job would
    log into this run. A flush failure must not turn a finished run into a failed one, hence the warning."""
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    try:
        wandb.finish(exit_code=exit_code)
    except Exception:
        log.warning("wandb.finish failed", exc_info=True)


def objective(metrics: Mapping[str, float], name: str | None) -> float | None:
    """The value a sweeper optimises; a name that was never logged is an error, not a silent None."""
    if not name:
        return None
    if name not in metrics:
        raise ValueError(f"optimized_metric {name!r} was not logged; logged: {sorted(metrics)}")
    return float(metrics[name])


def run_recorded(cfg: DictConfig, train: Callable[[DictConfig], Mapping[str, float]]) -> float | None:
    """``train(cfg)`` with status.json kept; returns ``cfg.optimized_metric``.

    In a multirun a failed job logs its traceback and returns NaN (sweepers rank it last, Optuna marks the
    trial failed) so the sweep goes on; a single run re-raises, so the shell sees the error.
    """
    metric = cfg.get("optimized_metric")
    status = RunStatus(cfg.paths.output_dir)
    try:
        status.start(optimized_metric=metric)
        value = objective(train(cfg), metric)
    except Exception as error:
        status.finish("failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        finish_wandb(exit_code=1)
        if not is_multirun():
            raise
        log.exception("run failed, the sweep goes on; see %s", status.path)
        return math.nan
    except BaseException as error:  # Ctrl-C: Lightning shuts down gracefully, then raises SystemExit
        status.finish("interrupted", error=type(error).__name__)
        finish_wandb(exit_code=1)
        raise
    status.finish("completed", objective=value)
    finish_wandb(exit_code=0)
    return value
