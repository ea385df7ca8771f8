"""Frames from videos, webcams and in-memory frame iterators, and the per-frame tracked results of a stream.

``read_frames`` is what ``fer-predict`` and ``EmotionRecognizer.stream`` both read videos with; ``stream_faces``
is ``EmotionRecognizer.stream``: every frame's faces found, classified, tracked and smoothed
(``fer_lightning.deploy.tracking``), one ``FrameResult`` per frame, as the frames come (a webcam is never read
ahead).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from fer_lightning.deploy.recognizer import FaceResult
from fer_lightning.deploy.tracking import FaceTracks

if TYPE_CHECKING:
    from fer_lightning.deploy.recognizer import EmotionRecognizer


@dataclass(frozen=True)
class FrameResult:
    """One frame of a video or stream: its index, its time in seconds, and its faces (tracked, smoothed)."""

    frame: int
    time_s: float
    faces: list[FaceResult]


def read_frames(
    capture: cv2.VideoCapture, every: int, max_frames: int | None, camera: bool, seen: list[int] | None = None
) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, seconds, BGR frame) for every ``every``-th frame; file times from the frame rate, camera
    times from the wall clock (webcams report nominal rates). ``seen`` (if given) gets the number of frames
    decoded, and, when the video ran out before ``max_frames``, -1 appended."""
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    start, index, taken = time.monotonic(), -1, 0
    seen = seen if seen is not None else []
    seen[:] = [0]
    while max_frames is None or taken < max_frames:
        if not capture.grab():
            seen.append(-1)
            return
        index += 1
        if index % every:
            seen[0] = index + 1
            continue
        ok, frame = capture.retrieve()
        if not ok:
            seen.append(-1)
            return
        seen[0] = index + 1
        taken += 1
        if camera or fps <= 0:
            seconds = time.monotonic() - start if camera else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
        else:
            seconds = index / fps
        yield index, seconds, frame


def rgb_frames(
    source: str | Path | int | Iterable[np.ndarray], every: int = 1, fps: float = 30.0
) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, seconds, RGB frame) from a video file, a webcam index, or an iterable of RGB frames (timed at
    ``fps``)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if isinstance(source, str | Path | int):
        camera = isinstance(source, int)
        capture = cv2.VideoCapture(source if camera else str(source))
        if not capture.isOpened():
            raise ValueError(f"{source}: cannot open as a video{' (no such camera?)' if camera else ''}")
        try:
            for index, seconds, frame in read_frames(capture, every, None, camera):
                yield index, seconds, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
        return
    for index, frame in enumerate(source):
        if index % every == 0:
            yield index, index / fps, np.asarray(frame)


def stream_faces(
    recognizer: EmotionRecognizer, source, every, smooth, max_gap, fps, detect_every
) -> Iterator[FrameResult]:
    """``EmotionRecognizer.stream`` (which documents the options)."""
    if detect_every < 1:
        raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    tracks = FaceTracks(smooth, max_gap)
    for k, (index, seconds, rgb) in enumerate(rgb_frames(source, every, fps)):
        found, faces, ids = faces_of_frame(recognizer, tracks, rgb, seconds, k % detect_every == 0)
        results = recognizer.results(found, recognizer.classify(faces))
        yield FrameResult(index, seconds, tracks.smooth(results, ids, seconds))


def faces_of_frame(
    recognizer: EmotionRecognizer, tracks: FaceTracks, rgb: np.ndarray, seconds: float, detect: bool
) -> tuple[list, np.ndarray, list[int]]:
    """A frame's faces (detections, 48x48 crops) and their track IDs: found by the detector when ``detect``, else
    carried by the tracks to where they are predicted now (the classifier still gets this frame's crops)."""
    if detect:
        found, faces = recognizer.find_faces(rgb)
        return found, faces, tracks.assign(found, seconds)
    ids, carried = tracks.carried(seconds)
    return carried, recognizer.crops(rgb, carried), ids
