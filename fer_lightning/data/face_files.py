"""Faces from image files, for the readers of datasets that ship photos: whole pre-cropped faces, or faces found in
full frames (CK+'s original 640x490 sequences, JAFFE's 256x256 photos) or cut at a given box (AffectNet).

Every face comes out as the FER-2013 images are: 8-bit grayscale (ITU-R 601 luma, PIL ``convert("L")``), resized
with PIL's bilinear filter to ``size`` x ``size``; with ``channels=3`` in RGB instead (H, W, 3). A face in a full
frame is found and cropped exactly as ``fer-predict`` does it (``fer_lightning.deploy``): the largest face the
detector finds, aligned by its landmarks (RetinaFace) or its box grown by ``margin`` (Haar), so a model is scored
on the faces it would see deployed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger("fer_lightning.data")
NO_FACE_POLICIES = ("skip", "error")


class DatasetError(ValueError):
    """A dataset's files are there but wrong: the message names the file, the line where there is one, and the
    problem."""


def open_gray(path: Path, channels: int = 1) -> np.ndarray:
    """The whole image at ``path``, upright, in 8-bit grayscale (or RGB, ``channels=3``); a clear error when it is
    no readable image."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            # convert forces the decode: corrupt files fail here
            return np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: unreadable image: {exc}") from exc


def resized(gray: np.ndarray, size: int) -> np.ndarray:
    """``gray`` (or an RGB face) resized to ``size`` x ``size`` as the FER-2013 image-folder reader does (PIL
    bilinear)."""
    if gray.shape[:2] == (size, size):
        return gray
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def whole_face(path: Path, size: int, channels: int = 1) -> np.ndarray:
    """An image that is already a face crop (CK+48, RAF-DB aligned, class-folder copies), resized."""
    return resized(open_gray(path, channels), size)


class FaceCropper:
    """The largest face in a photo, cropped and aligned as ``fer-predict`` does (``detector``: ``auto``,
    ``retinaface`` or ``haar``; see ``fer_lightning.deploy.detectors``), or cut at a box the dataset gives.

    Needs the ``deploy`` extra (OpenCV, ONNX Runtime); the detector is made at the first face asked for.
    """

    def __init__(
        self, detector: str = "auto", align: bool = True, margin: float = 0.1, size: int = 48, channels: int = 1
    ) -> None:
        self.detector_name, self.align, self.margin, self.size = detector, align, margin, size
        self.channels = channels
        self._detector = None

    @property
    def identity(self) -> list:
        """What the cache key must remember of this cropper."""
        return [self.detector_name, self.align, self.margin, self.size, self.channels]

    def _detect(self):
        if self._detector is None:
            try:
                from fer_lightning.deploy.detectors import make_detector
            except ImportError as exc:
                raise RuntimeError(
                    f"finding faces in full frames needs OpenCV and ONNX Runtime ({exc}): "
                    'pip install "fer-lightning[deploy]"'
                ) from exc
            self._detector = make_detector(self.detector_name)
        return self._detector

    def find(self, path: Path) -> np.ndarray | None:
        """The face crop (size x size uint8) of the largest face in the photo at ``path``; None if none is found."""
        from fer_lightning.deploy.align import align_face
        from fer_lightning.deploy.faces import crop_face, to_gray, to_rgb

        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"{path}: unreadable image: {exc}") from exc
        detector = self._detect()
        gray = to_gray(image)
        found = detector(gray, to_rgb(image) if detector.uses_color else None)
        if not found:
            return None
        face = found[0]  # largest first
        pixels = gray if self.channels == 1 else to_rgb(image)
        if self.align and face.landmarks:
            return align_face(pixels, face.landmarks, self.size)
        return crop_face(pixels, face, self.margin, self.size)

    def cut(self, path: Path, box: Sequence[int]) -> np.ndarray:
        """The face at ``box`` (x, y, width, height in the image's pixels), grown by ``margin``, made square."""
        from fer_lightning.deploy.faces import Box, crop_face

        try:
            return crop_face(open_gray(path, self.channels), Box(*box), self.margin, self.size)
        except ValueError as exc:
            if isinstance(exc, DatasetError):
                raise
            raise DatasetError(f"{path}: {exc}") from exc


def read_all(
    items: Sequence[tuple[Path, int]], read: Callable[[Path], np.ndarray | None], what: str, no_face: str = "skip"
) -> tuple[np.ndarray, np.ndarray]:
    """``read`` every ``(path, label)``: the stacked faces (N, S, S) and the positions in ``items`` of the faces
    read. A photo without a face (``read`` gives None) is skipped and counted (``no_face=skip``) or an error."""
    faces, kept, missed = [], [], []
    for i, (path, _) in enumerate(items):
        face = read(path)
        if face is None:
            if no_face == "error":
                raise DatasetError(f"{path}: no face found (no_face=skip would leave it out)")
            missed.append(path)
            continue
        faces.append(face)
        kept.append(i)
    if missed:
        log.warning("%s: no face found in %d of %d photos, left out; e.g. %s", what, len(missed), len(items), missed[0])
    if not faces:
        raise DatasetError(f"{what}: no face found in any of the {len(items)} photos")
    return np.stack(faces), np.asarray(kept, dtype=np.int64)
