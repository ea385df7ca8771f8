"""Faces from many photos or video frames classified together, ``batch_size`` at a time: one classifier call
for many small inputs is several times faster than one call each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fer_lightning.deploy.drawing import draw_faces
from fer_lightning.deploy.faces import Box
from fer_lightning.deploy.recognizer import EmotionRecognizer, FaceResult

MAX_PENDING_FRAMES = 32  # frames (or photos) held while their faces fill a batch
MAX_HELD_BYTES = 256 * 2**20  # ... and at most this much of their pixels kept for drawing


@dataclass
class Pending:
    """One photo or video frame whose faces wait for a batch; ``sink`` receives its annotated image, drawn on
    ``canvas``, which is ``canvas_scale`` times smaller than the image the boxes are in (a reduced JPEG decode)."""

    source: str
    frame: int | None
    time_s: float | None
    boxes: list[Box]
    faces: np.ndarray
    canvas: np.ndarray | None = None
    sink: Callable[[np.ndarray], None] | None = None
    results: list[FaceResult] = field(default_factory=list)
    canvas_scale: float = 1.0
    track_ids: list[int] | None = None  # a video frame's faces: their people (``fer_lightning.deploy.tracking``)


class Batcher:
    """Collects faces across photos / frames, classifies them in batches, and hands each item back, in the
    order added, with its ``results`` filled in (and its annotated image to its ``sink``)."""

    def __init__(self, recognizer: EmotionRecognizer, done: Callable[[Pending], None]) -> None:
        self.recognizer, self.done = recognizer, done
        self.pending: list[Pending] = []

    def add(self, item: Pending) -> None:
        self.pending.append(item)
        faces = sum(len(p.faces) for p in self.pending)
        held = sum(p.canvas.nbytes for p in self.pending if p.canvas is not None)
        if faces >= self.recognizer.batch_size or len(self.pending) >= MAX_PENDING_FRAMES or held > MAX_HELD_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        probs = self.recognizer.classify(np.concatenate([p.faces for p in self.pending]))
        start = 0
        for item in self.pending:
            item.results = self.recognizer.results(item.boxes, probs[start : start + len(item.faces)])
            start += len(item.faces)
            self.done(item)
            if item.sink is not None and item.canvas is not None:
                item.sink(draw_faces(item.canvas, item.results, item.canvas_scale))
        self.pending = []
