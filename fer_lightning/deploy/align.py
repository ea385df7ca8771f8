"""Alignment: a face turned upright and framed as in FER-2013, from its 5 landmarks, before the 48x48 crop.

FER-2013's faces are roughly upright and centred. ``FER_TEMPLATE`` is where their landmarks lie in the 48x48
image: the mean RetinaFace landmarks of the first 3,000 FER-2013 training faces (2,951 detected, each upscaled 4x
before detection), made left-right symmetric. The eyes lie level at y = 18.1, 16.8 px apart, the mouth at 36.3.

``align_face`` fits the similarity transform (rotation, uniform scale, shift; least squares over the 5 points)
that carries the template onto the face's landmarks and samples the image through it: the eyes come out level
and the face where FER-2013 puts it, whatever its tilt in the photo. Pixels outside the image repeat the edge,
as in ``crop_face``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fer_lightning.deploy.faces import FACE_SIZE, resize_face

# right eye, left eye (the person's), nose tip, right and left mouth corners, in pixels of a 48x48 FER-2013 face
FER_TEMPLATE = np.array([[15.6, 18.1], [32.4, 18.1], [24.0, 28.5], [17.2, 36.3], [30.8, 36.3]])


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[complex, complex]:
    """The least-squares similarity ``target ~ a * source + b`` between two point sets (N, 2), as complex
    numbers: ``a`` holds the scale and rotation, ``b`` the shift."""
    s = source[:, 0] + 1j * source[:, 1]
    t = target[:, 0] + 1j * target[:, 1]
    sc, tc = s - s.mean(), t - t.mean()
    a = np.vdot(sc, tc) / np.vdot(sc, sc).real
    return complex(a), complex(t.mean() - a * s.mean())


def roll_degrees(landmarks: Sequence[tuple[float, float]]) -> float:
    """The face's in-plane tilt: the angle of the line from its right eye to its left eye, clockwise positive."""
    (rx, ry), (lx, ly) = landmarks[0], landmarks[1]
    return float(np.degrees(np.arctan2(ly - ry, lx - rx)))


def align_face(gray: np.ndarray, landmarks: Sequence[tuple[float, float]], size: int = FACE_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` uint8 face from a grayscale image and its 5 landmarks (``Detection.landmarks``).

    Sampled at the face's own resolution first (bilinear, no aliasing), then resized to ``size`` with PIL's
    bilinear filter, as the training-data reader does.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if points.shape != FER_TEMPLATE.shape or not np.isfinite(points).all():
        raise ValueError(f"expected 5 finite (x, y) landmarks, got {points.tolist()}")
    a, b = similarity(FER_TEMPLATE, points)
    side = max(size, min(4096, round(FACE_SIZE * abs(a))))  # ~one image pixel per patch pixel
    step = a * FACE_SIZE / side  # patch pixel -> image pixel
    matrix = np.array([[step.real, -step.imag, b.real], [step.imag, step.real, b.imag]])
    patch = cv2.warpAffine(
        gray, matrix, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    return resize_face(patch, size)
