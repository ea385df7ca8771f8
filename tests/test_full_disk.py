"""A full disk mid-run (issue 37): no half-written checkpoint, the earlier ones intact, status ``failed`` with
the reason, and a one-line error from the leaderboard. On a real 2 MB tmpfs where the test may mount one, and with
a writer that fails part-way everywhere."""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
from pathlib import Path

import pytest
import torch

from fer_lightning import compare
from fer_lightning.train import train
from fer_lightning.training import checkpoint_io, run_status
from fer_lightning.training.run_status import RunStatus, read_status, run_recorded

pytestmark = pytest.mark.slow  # trains: tens of seconds


def checkpoints(run: Path) -> dict[str, int]:
    """Every file in the run's checkpoints/ and the epoch it holds (torch.load fails on a half-written one)."""
    return {p.name: torch.load(p, weights_only=True)["epoch"] for p in sorted((run / "checkpoints").iterdir())}


def test_a_checkpoint_write_that_fails_part_way_leaves_the_earlier_ones_whole(make_cfg, tmp_path, monkeypatch):
    original = checkpoint_io.write_durably
    saves = []

    def fails_on_the_third(path: Path, data: bytes) -> None:
        saves.append(path)
        if len(saves) < 3:
            return original(path, data)
        path.write_bytes(bytes(data[: len(data) // 2]))  # half of it reached the disk, then the disk was full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io, "write_durably", fails_on_the_third)
    with pytest.raises(OSError, match=r"cannot save the checkpoint .*(epoch_001|last)\.ckpt: No space left on device"):
        run_recorded(make_cfg("trainer.max_epochs=3", "callbacks.early_stopping=null", run="r"), train)
    run = tmp_path / "r"
    # Epoch 0 saved its best and last checkpoints; epoch 1's first save failed half-way: no trace of it, and
    # neither checkpoint of epoch 0 was deleted or touched.
    assert checkpoints(run) == {"epoch_000.ckpt": 0, "last.ckpt": 0}
    assert read_status(run)["status"] == "failed"


def test_a_run_on_a_full_disk_fails_with_its_reason_and_compare_says_so_in_one_line(make_cfg, tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()}); the other tests patch")
    try:
        run = disk / "run"
        with pytest.raises(OSError, match="No space left on device"):
            run_recorded(make_cfg("trainer.max_epochs=2", run="disk/run"), train)
        status = read_status(run)
        assert status["status"] == "failed" and "No space left on device" in status["error"], status
        assert status["ended_at"] and status["wall_time_s"] > 0
        assert checkpoints(run) == {}, "a checkpoint that could not be written must not exist under its name"
        with contextlib.suppress(OSError), (disk / "filler").open("ab", buffering=0) as filler:
            while True:  # fill what the failed save freed, to the last byte
                filler.write(b"\0" * 4096)
        with pytest.raises(SystemExit) as stopped:
            compare.main([str(run)])
        message = capsys.readouterr().err.strip()
        assert stopped.value.code == 1 and "\n" not in message, message
        assert "cannot write the leaderboard" in message and "No space left on device" in message
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_the_final_status_is_written_in_place_when_no_new_file_fits(tmp_path, monkeypatch):
    status = RunStatus(tmp_path / "run")
    status.start()
    size = status.path.stat().st_size

    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_status, "atomic_write", disk_full)
    status.finish("failed", error="OSError: full", traceback="Traceback ...\n" + "x" * 100_000 + "\nOSError: full")
    written = json.loads(status.path.read_text())
    assert written["status"] == "failed" and written["error"] == "OSError: full"
    assert written["traceback"].endswith("OSError: full"), "a cut traceback keeps its end"
    assert status.path.stat().st_size == size, "overwritten within the bytes start() reserved"
