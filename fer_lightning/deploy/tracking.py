"""Who is who across video frames: appearance-free box tracking (as SORT and ByteTrack associate) and per-person
smoothing of the probabilities over time.

``BoxTracker``: every track predicts its box at the new frame's time from its last box and velocity (constant
velocity, as SORT's Kalman filter assumes, without the filter's covariance); detections are matched to the
predictions by box overlap (IoU), highest overlap first, at least ``min_iou``; a detection left over starts a new
track. A track that finds no detection for longer than ``max_gap_s`` seconds ends, so a person who leaves and comes
back within that gap keeps their ID, and one who comes back later gets a new one (nothing here recognises faces).
Greedy matching, rather than the optimal assignment, is what a few faces per frame need.

``ProbabilitySmoother``: an exponential moving average per track with a time constant in seconds, which weighs
frames by the time between them, so a 15 fps and a 30 fps video smooth alike: ``s += (1 - exp(-dt / tau)) (p - s)``.
``tau = 0`` turns it off. The first frame of a track is its own average.

Only numpy: ONNX deployment runs without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fer_lightning.deploy.detectors import Detection
from fer_lightning.deploy.faces import Box
from fer_lightning.deploy.recognizer import FaceResult


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Overlap (intersection over union) of every box in ``a`` (N, 4: x, y, w, h) with every box in ``b`` (M, 4)."""
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    inter = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None) * np.clip(
        np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None
    )
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return inter / np.maximum(union, 1e-9)


@dataclass
class Track:
    id: int
    box: np.ndarray  # x, y, w, h at ``time_s``
    velocity: np.ndarray  # of (x, y, w, h), per second
    time_s: float
    hits: int = 1  # detections matched to it

    def predicted(self, time_s: float) -> np.ndarray:
        return self.box + self.velocity * (time_s - self.time_s)


class BoxTracker:
    """Track IDs for the face boxes of successive frames (see the module docstring)."""

    def __init__(self, max_gap_s: float = 1.0, min_iou: float = 0.2) -> None:
        if max_gap_s < 0 or not 0 < min_iou <= 1:
            raise ValueError(f"max_gap_s must be >= 0 and min_iou in (0, 1], got {max_gap_s} and {min_iou}")
        self.max_gap_s, self.min_iou = max_gap_s, min_iou
        self.tracks: list[Track] = []
        self.next_id = 1
        self.ended: list[int] = []  # IDs ended by the last update

    def update(self, boxes: Sequence[Box], time_s: float) -> list[int]:
        """The track ID of every box (in order) of the frame at ``time_s``; times must not go back."""
        alive = [t for t in self.tracks if time_s - t.time_s <= self.max_gap_s]
        self.ended = [t.id for t in self.tracks if t not in alive]
        found = np.array([b.as_list() for b in boxes], dtype=np.float64).reshape(-1, 4)
        ids: list[int | None] = [None] * len(found)
        if alive and len(found):
            overlap = iou(np.stack([t.predicted(time_s) for t in alive]), found)
            for flat in np.argsort(-overlap, axis=None):
                ti, di = divmod(int(flat), len(found))
                if overlap[ti, di] < self.min_iou:
                    break
                track = alive[ti]
                if ids[di] is not None or any(i == track.id for i in ids):
                    continue
                ids[di] = track.id
                dt = time_s - track.time_s
                if (
                    dt > 0
                ):  # from the second detection on, a blend of the old and the new: one noisy box does not throw it
                    measured = (found[di] - track.box) / dt
                    track.velocity = measured if track.hits == 1 else 0.5 * track.velocity + 0.5 * measured
                track.box, track.time_s, track.hits = found[di], time_s, track.hits + 1
        for di, box in enumerate(found):
            if ids[di] is None:
                alive.append(Track(self.next_id, box, np.zeros(4), time_s))
                ids[di] = self.next_id
                self.next_id += 1
        self.tracks = alive
        return [int(i) for i in ids]


class ProbabilitySmoother:
    """Per-track exponential moving average of the probabilities, time constant ``time_constant_s``."""

    def __init__(self, time_constant_s: float = 0.5) -> None:
        if time_constant_s < 0:
            raise ValueError(f"the smoothing time constant must be >= 0 seconds, got {time_constant_s}")
        self.tau = time_constant_s
        self.state: dict[int, tuple[float, np.ndarray]] = {}

    def update(self, track_id: int, time_s: float, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        previous = self.state.get(track_id)
        if self.tau == 0 or previous is None:
            smoothed = probs
        else:
            last_time, last = previous
            weight = 1.0 - math.exp(-max(0.0, time_s - last_time) / self.tau)
            smoothed = last + weight * (probs - last)
        self.state[track_id] = (time_s, smoothed)
        return smoothed

    def forget(self, track_ids: Sequence[int]) -> None:
        for track_id in track_ids:
            self.state.pop(track_id, None)


class FaceTracks:
    """Tracking and smoothing together, for one video or stream. ``assign`` gives a frame's detections their track
    IDs (when the frame is read); ``smooth`` sets ``track_id``, ``smoothed_probs`` and ``smoothed_emotion`` on their
    ``FaceResult``s (once classified: fer-predict classifies frames in batches); ``update`` does both at once.

    Between detections (``detect_every=N``), ``carried`` gives every live track's last detection moved to where its
    track predicts it at that time (box and landmarks, so the crop is aligned as a detected one), with its ID; only
    detections keep a track alive."""

    def __init__(self, smooth_s: float = 0.5, max_gap_s: float = 1.0, min_iou: float = 0.2) -> None:
        self.tracker = BoxTracker(max_gap_s, min_iou)
        self.smoother = ProbabilitySmoother(smooth_s)
        self.detections: dict[int, Box] = {}

    def assign(self, detections: Sequence[Box], time_s: float) -> list[int]:
        ids = self.tracker.update(detections, time_s)
        self.smoother.forget(self.tracker.ended)
        for track_id in self.tracker.ended:
            self.detections.pop(track_id, None)
        self.detections.update(zip(ids, detections))
        return ids

    def carried(self, time_s: float) -> tuple[list[int], list[Detection]]:
        """The live tracks' IDs and their last detections moved to their predicted boxes at ``time_s``."""
        ids, moved = [], []
        for track in self.tracker.tracks:
            last = self.detections.get(track.id)
            if last is None or time_s - track.time_s > self.tracker.max_gap_s:
                continue
            x, y, w, h = track.predicted(time_s)
            scale = max(w, 1.0) / max(last.w, 1)
            landmarks = getattr(last, "landmarks", None)
            if landmarks is not None:
                landmarks = tuple((x + (px - last.x) * scale, y + (py - last.y) * scale) for px, py in landmarks)
            score = getattr(last, "score", None)
            moved.append(Detection(round(x), round(y), max(1, round(w)), max(1, round(h)), score, landmarks))
            ids.append(track.id)
        return ids, moved

    def smooth(self, results: Sequence[FaceResult], ids: Sequence[int], time_s: float) -> list[FaceResult]:
        out = []
        for result, track_id in zip(results, ids):
            names = list(result.probs)
            smoothed = self.smoother.update(track_id, time_s, np.array([result.probs[n] for n in names]))
            out.append(
                replace(
                    result,
                    track_id=track_id,
                    smoothed_probs={n: float(v) for n, v in zip(names, smoothed)},
                    smoothed_emotion=names[int(np.argmax(smoothed))],
                )
            )
        return out

    def update(self, results: Sequence[FaceResult], time_s: float) -> list[FaceResult]:
        """``assign`` the results' boxes, then ``smooth`` them: a frame that is classified as soon as it is read."""
        return self.smooth(results, self.assign([Box(*r.box) for r in results], time_s), time_s)
