"""The records of a run, one per face (or one ``no_face`` / ``error`` per input): their schema, and the JSON-lines
and CSV writers. ``fer-predict`` and ``fer-serve`` both write them (docs/deploy.md has the schema)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import IO

from fer_lightning.deploy.batching import Pending
from fer_lightning.deploy.recognizer import FaceResult

STATUSES = ("ok", "no_face", "error")


def make_record(
    source: str,
    status: str,
    frame: int | None = None,
    time_s: float | None = None,
    face: int | None = None,
    result: FaceResult | None = None,
    error: str | None = None,
    detector: str | None = None,
) -> dict:
    """The output schema: the same keys for every record, ``None`` where a field does not apply. ``detector``
    names the detector for a record without a face (``no_face``); a face's own comes with its ``result``."""
    return {
        "source": source,
        "frame": frame,
        "time_s": None if time_s is None else round(time_s, 4),
        "status": status,
        "face": face,
        "box": result.box if result else None,
        "detector": result.detector if result else detector,
        "detector_score": result.detector_score if result else None,
        "emotion": result.emotion if result else None,
        "confidence": result.confidence if result else None,
        "probs": result.probs if result else None,
        "track_id": result.track_id if result else None,
        "smoothed_emotion": result.smoothed_emotion if result else None,
        "smoothed_probs": result.smoothed_probs if result else None,
        "error": error,
    }


class RecordWriter:
    """JSON lines (one object per line) or CSV (box and probabilities in columns ``x,y,w,h``, ``p_<class>``)."""

    def __init__(self, stream: IO[str], fmt: str, class_names: Sequence[str]) -> None:
        self.stream, self.fmt = stream, fmt
        self.columns = ["source", "frame", "time_s", "status", "face", "x", "y", "w", "h"]
        self.columns += ["detector", "detector_score", "emotion", "confidence"]
        self.columns += [f"p_{name}" for name in class_names] + ["track_id", "smoothed_emotion"]
        self.columns += [f"s_{name}" for name in class_names] + ["error"]
        self.csv = csv.DictWriter(stream, self.columns) if fmt == "csv" else None
        if self.csv:
            self.csv.writeheader()

    def write(self, record: dict) -> None:
        if self.csv is None:
            self.stream.write(json.dumps(record, allow_nan=False) + "\n")  # NaN is not JSON: an error, never written
        else:
            row = {k: v for k, v in record.items() if k in self.columns}
            row.update(zip("xywh", record["box"] or [None] * 4))
            row.update({f"p_{k}": v for k, v in (record["probs"] or {}).items()})
            row.update({f"s_{k}": v for k, v in (record["smoothed_probs"] or {}).items()})
            self.csv.writerow(row)
        self.stream.flush()


def write_records(item: Pending, writer: RecordWriter, detector: str | None = None) -> None:
    """A photo or frame's records: one per face, or one ``no_face`` (naming the ``detector`` that looked)."""
    if not item.results:
        writer.write(make_record(item.source, "no_face", item.frame, item.time_s, detector=detector))
    for i, result in enumerate(item.results):
        writer.write(make_record(item.source, "ok", item.frame, item.time_s, i, result))
