"""Smoke test of ``benchmarks`` at toy sizes: every row comes out, with positive numbers (no timing claims)."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.common import Row
from benchmarks.detectors import configurations, worker_counts
from benchmarks.suite import Sizes, collect_rows, format_table, render
from benchmarks.system import dataset_load_rows
from fer_lightning.resolvers import best_precision

pytestmark = pytest.mark.slow  # trains or benchmarks: tens of seconds

TINY = Sizes(
    loader_images=128,
    loader_rounds=1,
    loader_seconds=0.0,
    train_images=192,
    train_epochs=1,
    epoch_images=256,
    epoch_min_batches=1,
    epoch_min_seconds=0.0,
    val_batches=1,
    cpu_eval_batch=256,  # its validation asks for more faces than epoch_images, as a GPU's 512 does
    models=("logreg",),
    rss_train_batches=2,
    rss_sizes=(128, 64, 64),
    deploy_repeats=1,
    deploy_batch=4,
    detector_scenes=0,
    detector_12mp=1,
)


def _positive(row: Row) -> bool:
    return all(v is None or (math.isfinite(v) and v > 0) for v in (row.value, row.baseline, row.ratio))


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[Row]:
    root = tmp_path_factory.mktemp("bench")
    return collect_rows(TINY, root / "work", fer2013_dir=None)


def test_every_row_is_there_with_positive_numbers(rows):
    names = [row.name for row in rows]
    expected = [
        "Augmented train batches/s",
        "cnn3 training images/s",
        "compact training images/s",
        *(["compact training images/s"] if best_precision("cpu") != "32-true" else []),
        "FER-2013 epoch, model=logreg (cpu)",
        *(["FER-2013 epoch, model=logreg (gpu)"] if torch.cuda.is_available() else []),
        "FER-2013 load",
        "Peak RSS",
        "Deploy: Haar face detection",
        *(f"Deploy: {backend} {what}" for backend in ("torch", "onnxruntime") for what in ("photo", "one", "batch")),
        "Deploy: shipped fer2013 model batched",
        *(
            f"Detect: {label} {what}"
            for label, _, _ in configurations()
            for what in ("recall", "photos", "12 MP photos", "12 MP phone")
        ),
        *(f"fer-predict phone-sized folder, --workers {count}" for count in worker_counts()),
        "Video: stream() end to end",
        "Video: stream(detect_every=",
    ]
    assert len(names) == len(expected), names
    for name, start in zip(names, expected):
        assert name.startswith(start), (name, start)
    assert not [row for row in rows if row.note.startswith("failed")], "no row may fail"
    assert all(_positive(row) for row in rows), rows
    measured = [row for row in rows if not row.name.startswith("FER-2013 load")]
    assert all(row.value is not None for row in measured)
    assert rows[0].baseline and rows[1].baseline and rows[2].baseline, "rows 1 to 3 carry baselines and ratios"
    assert rows[0].ratio == pytest.approx(rows[0].value / rows[0].baseline)


def test_dataset_load_row_is_skipped_without_fer2013_dir(rows):
    skipped = next(row for row in rows if row.name.startswith("FER-2013 load"))
    assert skipped.value is None and skipped.note == "skipped: set FER2013_DIR"


def test_deploy_rows_carry_their_units(rows):
    units = {row.name.split()[-1]: row.unit for row in rows if row.name.startswith("Deploy:")}
    assert units == {"detection": "ms", "end": "ms", "face": "ms", "batched": "faces/s"}


def test_dataset_load_rows_time_a_fer2013_csv(tmp_path: Path):
    rng = np.random.default_rng(0)
    lines = [
        f"{i % 7},{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},{usage}"
        for i, usage in enumerate(["Training"] * 6 + ["PublicTest"] * 2 + ["PrivateTest"] * 2)
    ]
    (tmp_path / "fer2013.csv").write_text("\n".join(["emotion,pixels,Usage", *lines]) + "\n")
    cold, cached = dataset_load_rows(str(tmp_path))
    assert cold.value > 0 and cached.value > 0 and cached.ratio == pytest.approx(cold.value / cached.value)
    assert "10 images" in cold.note


def test_markdown_report(rows):
    text = render(rows, "python -m benchmarks --quick", datetime.now().astimezone())
    table = format_table(rows)
    assert table in text and "`python -m benchmarks --quick`" in text and "- CPU: " in text
    assert len(table.splitlines()) == len(rows) + 2
