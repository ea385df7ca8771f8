"""``haar``: OpenCV's frontal-face Haar cascade, shipped inside the opencv-python wheels before 5.0.

The dependency-free fallback: no score (records carry ``detector_score: null``), no landmarks (no alignment),
misses faces that are not frontal, occluded (sunglasses) or tilted by more than about 15 degrees.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fer_lightning.deploy.detectors import Detection, largest_first

HAAR_CASCADE = "haarcascade_frontalface_default.xml"


class HaarFaceDetector:
    """The cascade on a histogram-equalised copy downscaled to at most ``max_side`` px (boxes mapped back).

    ``min_size`` is the smallest face side in pixels of the image as given. Faces come back largest first.
    """

    name = "haar"
    uses_color = False

    def __init__(
        self, max_side: int = 1280, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24
    ) -> None:
        path = Path(cv2.data.haarcascades) / HAAR_CASCADE
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path}: install opencv-python-headless<5")
        self.max_side, self.scale_factor = max_side, scale_factor
        self.min_neighbors, self.min_size = min_neighbors, min_size

    def __call__(self, gray: np.ndarray, rgb: np.ndarray | None = None) -> list[Detection]:
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w))
        small = gray
        if scale < 1.0:
            small = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        min_side = max(12, round(self.min_size * scale))
        found = self.cascade.detectMultiScale(
            cv2.equalizeHist(small),
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
        )
        boxes = np.asarray(found).reshape(-1, 4).tolist()
        return largest_first([Detection(*(round(v / scale) for v in box)) for box in boxes])
