"""Faces drawn on the image they were found in: what ``fer-predict --annotate`` writes."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fer_lightning.deploy.recognizer import FaceResult


def draw_faces(rgb: np.ndarray, results: Sequence[FaceResult], box_scale: float = 1.0) -> np.ndarray:
    """Boxes and "emotion confidence" labels (in a video "#track emotion confidence", smoothed) drawn on a copy of
    an RGB (or BGR: colours are symmetric) image; ``box_scale``: the boxes are in pixels of an image that many
    times larger (a JPEG decoded at a reduced scale)."""
    canvas = np.ascontiguousarray(rgb).copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    scale = max(0.4, max(canvas.shape[:2]) / 1000)
    for result in results:
        x, y, w, h = (round(v / box_scale) for v in result.box)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 255, 0), thickness)
        label = f"{result.emotion} {result.confidence:.2f}"
        if result.track_id is not None:  # a video: the person's ID and their smoothed emotion
            smoothed = result.smoothed_probs[result.smoothed_emotion]
            label = f"#{result.track_id} {result.smoothed_emotion} {smoothed:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y - th - base - 2)
        cv2.rectangle(canvas, (x, top), (x + tw + 2, top + th + base + 2), (0, 255, 0), -1)
        cv2.putText(canvas, label, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness)
    return canvas
