"""Face detectors: one small contract (``FaceDetector``), one module per backend, one table (``BACKENDS``).

    >>> from fer_lightning.deploy.detectors import make_detector
    >>> detector = make_detector("auto")  # the best installed backend (``BACKENDS`` order)
    >>> [(d.as_list(), d.score) for d in detector(gray, rgb)]

Backends (best first, the order ``auto`` tries them in):

- ``retinaface``: RetinaFace (MobileNet-0.25) run by ONNX Runtime, its ONNX file inside this package (nothing
  is downloaded). Gives a score and 5 landmarks (eyes, nose, mouth corners) per face, used to align the face
  upright. Needs onnxruntime (the ``deploy`` extra).
- ``haar``: OpenCV's frontal-face Haar cascade (inside the opencv wheels < 5): no score, no landmarks, the
  dependency-free fallback.

Each backend module is imported only when it is asked for, and none imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

import numpy as np

from fer_lightning.deploy.faces import Box

Point = tuple[float, float]


@dataclass(frozen=True)
class Detection(Box):
    """A face box (``Box``: x, y, w, h in pixels of the image as given) with what the detector says about it:
    its ``score`` (None for detectors without one, like Haar) and ``landmarks``, 5 points in the order right eye,
    left eye (the person's: on the image's left and right for an upright face), nose tip, right and left mouth
    corners, or None."""

    score: float | None = None
    landmarks: tuple[Point, ...] | None = field(default=None, compare=False)

    @property
    def eyes(self) -> tuple[Point, Point] | None:
        return (self.landmarks[0], self.landmarks[1]) if self.landmarks else None

    def scaled(self, scale: float, size: tuple[int, int]) -> Detection:
        """This detection in an image ``scale`` times larger whose (width, height) is ``size``: the box's edges and
        the landmarks multiplied, the box clipped to the image."""
        x0, y0 = min(size[0] - 1, round(self.x * scale)), min(size[1] - 1, round(self.y * scale))
        x1, y1 = min(size[0], round((self.x + self.w) * scale)), min(size[1], round((self.y + self.h) * scale))
        landmarks = None if self.landmarks is None else tuple((x * scale, y * scale) for x, y in self.landmarks)
        return Detection(x0, y0, max(1, x1 - x0), max(1, y1 - y0), self.score, landmarks)


class FaceDetector(Protocol):
    """What a backend offers: its ``name`` (as in records and ``--detector``) and a call that finds the faces.

    ``gray`` is the 8-bit grayscale image (H, W); ``rgb`` the same image in colour (h, w, 3) when there is one
    (a colour-trained network is better with it), else None. ``rgb`` may be smaller than ``gray`` (callers shrink
    it to about ``max_side`` to save work), with the same aspect. Faces come back largest first, in pixels of
    ``gray``.
    """

    name: str
    uses_color: bool  # whether it looks at ``rgb`` (callers skip making one otherwise)
    max_side: int  # it detects on a copy whose longer side is at most this

    def __call__(self, gray: np.ndarray, rgb: np.ndarray | None = None) -> list[Detection]: ...


def largest_first(detections: list[Detection]) -> list[Detection]:
    return sorted(detections, key=lambda d: (-d.w * d.h, d.x, d.y))


@dataclass(frozen=True)
class Backend:
    """One row of ``BACKENDS``: how to build the detector, and which installed distribution it needs."""

    name: str
    build: Callable[[int | None, int | None], FaceDetector]  # (max_side or None for its own, threads) -> detector
    requires: str | None  # the distribution that must be installed, or None
    extra: str  # how to get it

    def available(self) -> bool:
        if self.requires is None:
            return True
        try:
            version(self.requires)
        except PackageNotFoundError:
            return False
        return True


def _retinaface(max_side: int | None, threads: int | None) -> FaceDetector:
    from fer_lightning.deploy.detectors.retinaface import RetinaFaceDetector

    return RetinaFaceDetector(threads=threads) if max_side is None else RetinaFaceDetector(max_side, threads=threads)


def _haar(max_side: int | None, threads: int | None) -> FaceDetector:
    from fer_lightning.deploy.detectors.haar import HaarFaceDetector

    return HaarFaceDetector() if max_side is None else HaarFaceDetector(max_side)


# Best first: ``auto`` takes the first one installed.
BACKENDS: dict[str, Backend] = {
    "retinaface": Backend("retinaface", _retinaface, "onnxruntime", 'pip install "fer-lightning[deploy]"'),
    "haar": Backend("haar", _haar, None, 'pip install "fer-lightning[deploy]"'),
}
AUTO = "auto"
NAMES = (AUTO, *BACKENDS)


def installed() -> list[str]:
    """Names of the backends whose packages are installed, best first."""
    return [name for name, backend in BACKENDS.items() if backend.available()]


def resolve(name: str) -> str:
    """The backend ``name`` stands for: ``auto`` is the best installed one."""
    if name == AUTO:
        return installed()[0]
    if name not in BACKENDS:
        raise ValueError(f"detector={name!r} is not one of {', '.join(NAMES)}")
    backend = BACKENDS[name]
    if not backend.available():
        raise RuntimeError(f"the {name} detector needs the {backend.requires} package: {backend.extra}")
    return name


def make_detector(name: str = AUTO, max_side: int | None = None, threads: int | None = None) -> FaceDetector:
    """The detector ``name`` (``auto``: the best installed), detecting on a copy whose longer side is at most
    ``max_side`` px (None: the backend's own default); ``threads``: its intra-op threads where it has any."""
    return BACKENDS[resolve(name)].build(max_side, threads)
