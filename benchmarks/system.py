"""Rows 4 and 5: FER-2013 load times and the peak memory of a train.py run."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import FER_TRAIN, FER_VAL, ROOT, Row
from fer_lightning.data.fer2013 import FER2013Source

GIB = 1024**3
RSS_TARGET_GIB = 2.0


def dataset_load_rows(root: str | None) -> list[Row]:
    """Cold (fresh, empty cache dir: parse) then cached (second load) times of ``FER2013Source``."""
    if not root:
        return [Row("FER-2013 load (cold / cached)", None, "s", note="skipped: set FER2013_DIR")]
    with tempfile.TemporaryDirectory(prefix="fer-bench-cache-") as cache:
        source = FER2013Source(root, cache_dir=cache)
        start = time.perf_counter()
        splits = source.load()
        cold = time.perf_counter() - start
        start = time.perf_counter()
        source.load()
        cached = time.perf_counter() - start
    images = f"{sum(len(s) for s in splits.values()):,} images in {', '.join(sorted(splits))}"
    return [
        Row("FER-2013 load, cold (empty cache)", cold, "s", note=f"FER2013_DIR={root}: {images}"),
        Row("FER-2013 load, cached", cached, "s", cold, cold / cached, "second load; baseline: the cold load"),
    ]


def _vm_hwm(pid: int) -> int:
    """Peak RSS in bytes of ``pid``'s current program (VmHWM; 0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _wait_with_rusage(process: subprocess.Popen, timeout: float) -> tuple[int, int]:
    """(exit code, peak RSS in bytes) of this child alone.

    ``ru_maxrss`` is no good here: Linux carries the high-water mark of the memory a child had before its
    exec, and Python spawns with vfork, so a child of a big process (this bench) starts at the bench's
    peak. VmHWM is reset by exec; it is sampled every 20 ms while the child runs (it only ever grows).
    """
    deadline, peak = time.monotonic() + timeout, 0
    while process.poll() is None:
        peak = max(peak, _vm_hwm(process.pid))
        if time.monotonic() > deadline:
            process.send_signal(signal.SIGKILL)
            process.wait()
            raise TimeoutError(f"train.py ran past {timeout:.0f} s")
        time.sleep(0.02)
    return process.returncode, peak


def peak_rss_rows(
    fer2013_dir: str | None,
    train_batches: int,
    workdir: Path,
    sizes: Sequence[int] = (FER_TRAIN, FER_VAL, FER_VAL),
    timeout: float = 600.0,
) -> list[Row]:
    """Peak resident memory of ``python train.py model=cnn3`` (fit for ``train_batches``, full val, test, report)."""
    run_dir = workdir / "rss-run"
    args = [
        sys.executable,
        "train.py",
        "model=cnn3",
        "trainer.max_epochs=1",
        f"++trainer.limit_train_batches={train_batches}",
        "++trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        f"hydra.run.dir='{run_dir}'",
    ]
    if fer2013_dir:
        args += ["data=fer2013", f"paths.data_dir='{fer2013_dir}'", f"paths.cache_dir='{workdir / 'rss-cache'}'"]
        data = "FER2013_DIR, cold cache"
    else:
        train, val, test = sizes
        args += [f"data.source.train_size={train}", f"data.source.val_size={val}", f"data.source.test_size={test}"]
        data = f"synthetic faces sized {train:,}/{val:,}/{test:,}"
    log_path = workdir / "rss-run.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        code, peak = _wait_with_rusage(process, timeout)
    if code != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"train.py failed (exit {code}):\n{tail}")
    return [
        Row(
            "Peak RSS of a cnn3 train.py run",
            peak / GIB,
            "GiB",
            note=f"{data}; {train_batches} train batches, full val + test + report; target < {RSS_TARGET_GIB:.0f} GiB",
        )
    ]
