"""``make bench``: the framework's speed and memory figures, measured side by side in one run.

    python -m benchmarks [--quick] [--out docs/benchmarks.md] [--models cnn3,vgg] [--threads N]

Prints a Markdown table and writes it, with the date, the machine and the command, to ``--out``.
A full run takes a few minutes on 2 CPU cores; ``--quick`` is a ~1 minute smoke version (fewer images
and epochs, only cnn3 in the per-model rows). Every timing is steady state: warm-up epochs or batches
are run and left out. Rows, one function each (each returns ``Row``\\ s; see the modules beside this one):

1. augmented training batches/s: FERDataModule vs torchvision ImageFolder + transforms (``data``)
2. cnn3 training images/s: train.py's Lightning path vs a plain PyTorch loop (``train``)
3. seconds per FER-2013 epoch of every ``conf/model`` config, on the CPU and on a GPU if any (``train``)
4. FER-2013 load time, cold and cached, when ``FER2013_DIR`` is set (``system``)
5. peak resident memory of a cnn3 ``train.py`` run on FER-2013-sized data (``system``)
6. deploy latency: detection, end-to-end photo and batched classification, PyTorch vs ONNX Runtime (``deploy``)
7. face detectors: recall on a labelled set and photos/s end to end of every installed one vs Haar (``detectors``)
8. video end to end, frames/s: decode + detect + classify + track + smooth vs the untracked per-frame path (``video``)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import lightning
import torch

from benchmarks.common import CONF_DIR, Row, head
from benchmarks.data import loader_rows
from benchmarks.deploy import deploy_rows
from benchmarks.detectors import carry_section, detector_rows
from benchmarks.system import dataset_load_rows, peak_rss_rows
from benchmarks.train import epoch_time_rows, framework_rows, stem_rows
from benchmarks.video import video_rows
from fer_lightning.data.synthetic import generate_faces
from fer_lightning.resolvers import best_precision

log = logging.getLogger("benchmarks")
GPU_EVAL_BATCH = 512  # data.eval_batch_size of the configs: on a GPU the batch size does matter


@dataclass(frozen=True)
class Sizes:
    """How much each row measures; ``FULL`` stays under 10 minutes on 2 CPU cores."""

    loader_images: int = 3000  # faces written as PNGs and loaded by both pipelines (row 1)
    loader_rounds: int = 5  # rounds in which both pipelines take turns, after a warm-up epoch each...
    loader_seconds: float = 1.0  # ...each pipeline timed for at least this long per round
    train_images: int = 3000  # in-memory training set of row 2
    train_epochs: int = 4  # timed epochs per side, after a warm-up one
    epoch_images: int = 4096  # training images of row 3: caps its timed batches at epoch_images / 64 - 1
    epoch_min_batches: int = 3  # row 3 times at least this many training batches...
    epoch_min_seconds: float = 4.0  # ...over at least this long (or until the images run out)
    val_batches: int = 2  # row 3's timed validation batches, after a warm-up one
    cpu_eval_batch: int = 128  # row 3's CPU validation batch (per-image cost barely depends on it)
    models: tuple[str, ...] | None = None  # row 3's model configs; None: every conf/model/*.yaml
    rss_train_batches: int = 50  # row 5's training batches (then full val + test)
    rss_sizes: tuple[int, int, int] = (28_709, 3_589, 3_589)  # row 5's synthetic split sizes
    deploy_repeats: int = 20  # row 6: median over this many runs...
    deploy_batch: int = 256  # ...and faces per batched call
    detector_scenes: int = 8  # row 7: composite scenes per kind in the labelled set (benchmarks.detectors)
    detector_12mp: int = 4  # ...and of them scaled to 12 MP for the end-to-end rate
    video_frames: int = 150  # row 8: frames of the 640x480 clip


FULL = Sizes()
QUICK = Sizes(
    loader_images=1000,
    loader_rounds=1,
    loader_seconds=0.5,
    train_images=1280,
    train_epochs=1,
    epoch_images=1024,
    epoch_min_batches=2,
    epoch_min_seconds=1.0,
    val_batches=1,
    models=("cnn3",),
    rss_train_batches=10,
    detector_scenes=2,
    detector_12mp=1,
    video_frames=40,
)


def model_configs() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def collect_rows(sizes: Sizes, workdir: Path, fer2013_dir: str | None = None) -> list[Row]:
    """Every row, in table order. A failing row becomes a "failed" row: the others still get measured."""
    eval_batches = {"cpu": sizes.cpu_eval_batch, "gpu": GPU_EVAL_BATCH}
    accelerators = ["cpu", "gpu"] if torch.cuda.is_available() else ["cpu"]
    val_images = max(eval_batches[a] for a in accelerators) * (sizes.val_batches + 1)
    pool = max(sizes.loader_images, sizes.train_images, sizes.epoch_images, val_images)
    log.info("drawing %d synthetic faces", pool)
    faces = generate_faces(pool, seed=12345)
    models = sizes.models or tuple(model_configs())
    steps: list[tuple[str, Callable[[], list[Row]]]] = [
        (
            "augmented batches/s",
            partial(loader_rows, head(faces, sizes.loader_images), sizes.loader_rounds, sizes.loader_seconds, workdir),
        ),
        (
            "Lightning vs plain loop",
            partial(framework_rows, head(faces, sizes.train_images), sizes.train_epochs, workdir / "framework"),
        ),
        ("compact stems", partial(stem_rows, head(faces, sizes.train_images), sizes.train_epochs, workdir / "stems")),
        *(
            (
                f"epoch time {model} ({accelerator})",
                partial(
                    epoch_time_rows,
                    model,
                    faces,
                    sizes.epoch_images,
                    accelerator,
                    sizes.epoch_min_batches,
                    sizes.epoch_min_seconds,
                    sizes.val_batches,
                    eval_batches[accelerator],
                    workdir / "epoch",
                ),
            )
            for accelerator in accelerators
            for model in models
        ),
        ("FER-2013 load", partial(dataset_load_rows, fer2013_dir)),
        ("peak RSS", partial(peak_rss_rows, fer2013_dir, sizes.rss_train_batches, workdir, sizes.rss_sizes)),
        ("deploy latency", partial(deploy_rows, sizes.deploy_repeats, sizes.deploy_batch)),
        ("face detectors", partial(detector_rows, 0, sizes.detector_scenes, sizes.detector_12mp)),
        ("video", partial(video_rows, sizes.video_frames, torch.get_num_threads())),
    ]
    rows: list[Row] = []
    for name, step in steps:
        log.info("measuring: %s", name)
        try:
            rows += step()
        except Exception as error:  # one broken row must not cost the other minutes of measurements
            log.error("%s failed:\n%s", name, traceback.format_exc())
            rows.append(Row(name, None, "", note=f"failed: {type(error).__name__}: {error}".splitlines()[0]))
    return rows


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def format_table(rows: Sequence[Row]) -> str:
    lines = ["| Measurement | Value | Unit | Baseline | Ratio | Note |", "|---|--:|---|--:|--:|---|"]
    for row in rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}x"
        cells = (row.name, _number(row.value), row.unit, _number(row.baseline), ratio, row.note)
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        return float("nan")


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def machine_lines(load_at_start: str = "n/a") -> list[str]:
    """What the figures depend on; the load average tells whether other work shared the machine."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    precision = f"{best_precision('cpu')} on the CPU" + (
        f", {best_precision('gpu')} on the GPU" if gpu != "none" else ""
    )
    return [
        f"- CPU: {_cpu_model()}, {os.cpu_count()} cores ({usable} usable), torch threads {torch.get_num_threads()}",
        f"- RAM: {_ram_gib():.1f} GiB; GPU: {gpu}",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}",
        f"- Precision (trainer default, `best_precision`): {precision}",
        f"- Load average (1 min) at start / end: {load_at_start} / {_load()} (well above 0 at start: a shared CPU)",
    ]


def render(rows: Sequence[Row], command: str, started: datetime, load_at_start: str = "n/a") -> str:
    return "\n".join(
        [
            "# Benchmarks",
            "",
            f"- Date: {started.isoformat(timespec='seconds')}",
            f"- Command: `{command}`",
            *machine_lines(load_at_start),
            "",
            format_table(rows),
            "",
            "Ratio: times better than the baseline (above 1 is better; for times, baseline / value).",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke version")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"), help="Markdown file to write")
    parser.add_argument("--models", help="comma-separated conf/model configs for the epoch rows (default: all)")
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's); 1 is steadier on a shared machine"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("lightning.pytorch", "lightning.fabric", "fer_lightning.data"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    if args.models:
        sizes = replace(sizes, models=tuple(args.models.split(",")))
    started, load_at_start = datetime.now(timezone.utc).astimezone(), _load()
    with tempfile.TemporaryDirectory(prefix="fer-bench-") as workdir:
        rows = collect_rows(sizes, Path(workdir), os.environ.get("FER2013_DIR") or None)
    command = " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])])
    text = render(rows, command, started, load_at_start)
    print(format_table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(carry_section(args.out, text))  # keeps the detector comparison's own section
    log.info("written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
