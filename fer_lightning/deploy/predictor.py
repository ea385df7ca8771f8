"""One pipeline from inputs to records: ``Predictor`` takes photos, folders, videos and webcams, finds, tracks,
classifies and smooths their faces, and hands each photo or frame to its writers (records, annotated images and
videos, timelines, heat maps). ``fer-predict`` parses its arguments and chooses the writers; the steps themselves
(detect, align, classify, track) are the recognizer's and ``deploy/tracking.py``'s, which ``EmotionRecognizer.stream``
and ``fer-serve`` use too.

    predictor = Predictor(recognizer, RecordWriter(sys.stdout, "jsonl", recognizer.class_names))
    failed = predictor.run(["photo.jpg", "clip.mp4"])
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from fer_lightning.deploy.batching import Batcher, Pending
from fer_lightning.deploy.faces import to_rgb
from fer_lightning.deploy.recognizer import EmotionRecognizer, FoundFaces
from fer_lightning.deploy.records import RecordWriter, make_record, write_records
from fer_lightning.deploy.sources import Input, expand_inputs, found_ahead
from fer_lightning.deploy.timeline import TimelineWriter
from fer_lightning.deploy.tracking import FaceTracks
from fer_lightning.deploy.video import faces_of_frame, read_frames

if TYPE_CHECKING:
    from fer_lightning.deploy.explain import ExplanationFolder


class AnnotationFolder:
    """Where ``--annotate`` writes: ``DIR/<input stem>.png`` for photos, ``DIR/<input stem>.mp4`` for videos, with
    ``_1``, ``_2``... when inputs share a stem. Names are reserved up front: images are written later, when
    their batch has been classified."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.reserved: set[Path] = set()

    def reserve(self, stem: str, suffix: str) -> Path:
        path, n = self.folder / f"{stem}{suffix}", 0
        while path.exists() or path in self.reserved:
            n += 1
            path = self.folder / f"{stem}_{n}{suffix}"
        self.reserved.add(path)
        return path


def process_image(
    path: str,
    recognizer: EmotionRecognizer,
    batcher: Batcher,
    annotate: AnnotationFolder | None,
    found: FoundFaces | None = None,
) -> None:
    """``found``: what ``recognizer.find_faces_in_file(path)`` returned, when a worker thread already ran it."""
    image, reduction, boxes, faces = found or recognizer.find_faces_in_file(path)  # boxes full-size
    canvas = sink = None
    if annotate is not None:  # drawn on the image as decoded (a large JPEG: the reduced one, boxes scaled down)
        canvas, target = to_rgb(image), annotate.reserve(Path(path).stem, ".png")

        def sink(drawn: np.ndarray, target: Path = target) -> None:
            Image.fromarray(drawn).save(target)

    scale = 1.0 if reduction is None else reduction.scale
    batcher.add(Pending(path, None, None, boxes, faces, canvas, sink, canvas_scale=scale))


@dataclass(frozen=True)
class VideoOptions:
    """How videos and webcams are read, tracked and smoothed (fer-predict's flags of the same names)."""

    every: int = 1
    detect_every: int = 1
    max_frames: int | None = None
    smooth: float = 0.5
    max_gap: float = 1.0
    progress: bool | None = None


def process_video(
    item: Input,
    recognizer: EmotionRecognizer,
    batcher: Batcher,
    annotate: AnnotationFolder | None,
    options: VideoOptions,
    tracks: FaceTracks,
) -> None:
    every, max_frames, detect_every = options.every, options.max_frames, options.detect_every
    capture = cv2.VideoCapture(item.source)
    if not capture.isOpened():
        raise ValueError(f"{item.name}: cannot open as a video{' (no such camera?)' if item.kind == 'camera' else ''}")
    writer: cv2.VideoWriter | None = None
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if item.kind == "video" else 0
    expected = -(-total // every) if total > 0 else None
    if expected is not None and max_frames is not None:
        expected = min(expected, max_frames)
    stem = _stem(item)
    target = annotate.reserve(stem, ".mp4") if annotate else None

    def sink(drawn: np.ndarray) -> None:
        nonlocal writer
        if writer is None:
            h, w = drawn.shape[:2]
            rate = (fps if fps > 0 else 30.0) / every  # the annotated video holds the processed frames only
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), rate, (w, h))
            if not writer.isOpened():
                raise ValueError(f"{target}: OpenCV cannot write an mp4v video here")
        writer.write(drawn)  # frames stay BGR end to end

    frames, seen = 0, [0]
    try:
        bar = tqdm(
            read_frames(capture, every, max_frames, item.kind == "camera", seen),
            total=expected,
            desc=item.name,
            unit="frame",
            disable=not options.progress if options.progress is not None else None,
            file=sys.stderr,
            leave=False,
        )
        for index, seconds, frame in bar:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            boxes, faces, ids = faces_of_frame(recognizer, tracks, rgb, seconds, frames % detect_every == 0)
            frames += 1
            canvas, draw = (frame, sink) if target else (None, None)
            batcher.add(Pending(item.name, index, seconds, boxes, faces, canvas, draw, track_ids=ids))
    finally:
        batcher.flush()  # also on Ctrl-C (how a webcam run ends): the frames read so far are reported and written
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise ValueError(f"{item.name}: no frame could be decoded")
    # A damaged or truncated file ends early: its container still says how many frames it has. Counts that
    # FFmpeg estimates from the duration can be a frame off, hence the tolerance.
    if total > 0 and seen[-1] == -1 and seen[0] < total - max(1, total // 100):
        raise ValueError(
            f"{item.name}: the video ended after {seen[0]} of its {total} frames (truncated or damaged file); "
            "the frames before that were processed"
        )


def _stem(item: Input) -> str:
    return Path(str(item.source)).stem if item.kind == "video" else f"camera_{item.source}"


class Predictor:
    """Inputs in, a record per face out (in input order), with optional writers beside the records.

    ``annotate``: images and videos with boxes and labels; ``timeline``: per video, each person's emotions over
    time (``TimelineWriter``); ``explain``: each face's heat map (an ``ExplanationFolder``). ``workers`` threads
    find the faces of the next photos while the current ones are classified. An input that fails gets an
    ``error`` record and a line through ``report``; the others still run.
    """

    def __init__(
        self,
        recognizer: EmotionRecognizer,
        writer: RecordWriter,
        video: VideoOptions = VideoOptions(),
        workers: int = 1,
        annotate: Path | None = None,
        timeline: Path | None = None,
        explain: ExplanationFolder | None = None,
        report: Callable[[str], None] = lambda message: print(f"fer-predict: {message}", file=sys.stderr),
    ) -> None:
        self.recognizer, self.writer, self.video, self.workers = recognizer, writer, video, workers
        self.annotate = AnnotationFolder(annotate) if annotate is not None else None
        self.timeline, self.explain, self.report = timeline, explain, report
        self.processed = 0  # photos and frames written
        self.tracks: dict[str, FaceTracks] = {}  # per video: who is who, and their smoothed probabilities
        self.timelines: dict[str, TimelineWriter] = {}
        self.batcher = Batcher(recognizer, self._done)

    def _done(self, item: Pending) -> None:
        self.processed += 1
        if item.track_ids is not None:  # a video frame: tracked and smoothed (drawn so, too); photos never are
            item.results = self.tracks[item.source].smooth(item.results, item.track_ids, item.time_s)
            if item.source in self.timelines:
                self.timelines[item.source].add(item.frame, item.time_s, item.results)
        write_records(item, self.writer, self.recognizer.detector_name)
        if self.explain is not None:
            self.explain.write(item.source, item.frame, item.faces, item.results)

    def run(self, inputs: Sequence[str]) -> int:
        """Process every input; returns how many failed."""
        failed = 0
        for item, found in found_ahead(expand_inputs(inputs), self.recognizer, self.workers):
            try:
                if item.kind == "error":
                    raise ValueError(f"{item.name}: {item.error}")
                if item.kind == "image":
                    process_image(
                        str(item.source), self.recognizer, self.batcher, self.annotate, found and found.result()
                    )
                else:
                    self._video(item)
            except (ValueError, OSError, cv2.error) as exc:
                self.batcher.flush()  # keep the records in input order
                failed += 1
                message = str(exc) if str(item.source) in str(exc) else f"{item.name}: {exc}"
                self.report(message)
                self.writer.write(make_record(item.name, "error", error=message))
        self.batcher.flush()
        return failed

    def _video(self, item: Input) -> None:
        options = self.video
        self.tracks[item.name] = FaceTracks(options.smooth, options.max_gap)
        if self.timeline is not None:
            self.timelines[item.name] = TimelineWriter(self.timeline, _stem(item), self.recognizer.class_names)
        try:
            process_video(item, self.recognizer, self.batcher, self.annotate, options, self.tracks[item.name])
        finally:  # a truncated video, Ctrl-C on a webcam: the timeline of the frames processed
            self.batcher.flush()
            self.tracks.pop(item.name)
            if item.name in self.timelines:
                self.timelines.pop(item.name).write()
