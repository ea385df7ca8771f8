"""From a photo or video frame to 48x48 grayscale faces prepared exactly as the FER-2013 training images.

Steps, in this order (the training images are 8-bit grayscale 48x48 face crops; the image-folder reader makes
them with PIL ``convert("L")`` and a bilinear ``resize``):

1. Load: a complete 8-bit JPEG in colour or grayscale (what cameras and phones write) is decoded by OpenCV
   straight into a numpy array (``load_pixels``): Pillow decodes as fast, but copying its image into an array
   costs half as much again (7 of 20 ms on a 12 MP photo). Other stills with PIL. Either way the image is turned
   upright by its EXIF Orientation tag (the two decoders give the same pixels). A large JPEG is decoded at a
   reduced scale (the JPEG decoder's DCT scaling, 1/2, 1/4 or 1/8) when its longer side stays at least
   ``min_side`` (the recognizer asks for its detector's ``max_side``, and decodes again at a finer scale where a
   face found is under 48 px); boxes and landmarks found in it are multiplied back to the full-size image's
   pixels.
2. Grayscale: ITU-R 601 luma, L = 0.299 R + 0.587 G + 0.114 B: PIL ``convert("L")`` for a PIL image, OpenCV's
   ``cvtColor`` for an RGB array (they round differently for 0.13% of the 2^24 colours, by one level).
   Transparent pixels (RGBA, LA, palette transparency) are composited onto white first; 16-bit images are
   scaled to 8 bits.
3. Detect (``fer_lightning.deploy.detectors``): RetinaFace on the colour image, or OpenCV's frontal-face Haar
   cascade on a histogram-equalised grayscale copy, downscaled so its longer side is at most ``max_side`` px
   (huge photos); boxes are mapped back to the full-resolution image.
4. Crop: a face with landmarks (RetinaFace) is aligned: turned upright and framed as FER-2013 frames its faces
   (``fer_lightning.deploy.align``). Otherwise the detector box grown by ``margin`` of its side on every side
   (Haar boxes are tighter than FER-2013's crops, which include the forehead and chin), kept square; parts
   outside the image repeat the edge pixels.
5. Resize: the crop to 48x48 with PIL's bilinear filter (antialiased when shrinking), from the grayscale image as
   decoded (full resolution, or a large JPEG's reduced decode), to uint8.

With no detector (``--detector none``) every input is taken as an already cropped face: steps 3-4 are skipped
and the whole image is resized to 48x48, as the training reader does with non-48x48 files.

Only numpy, Pillow and OpenCV are needed here: ONNX deployment runs without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

FACE_SIZE = 48
ORIENTATION = 0x0112  # the EXIF Orientation tag
ARRAY_JPEG_FORMATS = ("JPEG", "MPO")  # MPO: a JPEG with more images after the first (some cameras, phones)
ARRAY_JPEG_MODES = {"RGB": cv2.IMREAD_COLOR_RGB, "L": cv2.IMREAD_GRAYSCALE}  # not CMYK: Pillow handles Adobe's
# OpenCV's flag bits for a decode at 1/2, 1/4, 1/8 (the IMREAD_REDUCED_GRAYSCALE_* flags; the colour bits come from
# ARRAY_JPEG_MODES)
REDUCED_FLAGS = {
    1: 0,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
JPEG_END = b"\xff\xd9"  # the EOI marker: a JPEG that does not end with it may be truncated


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the (upright) input image: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class Reduction:
    """How a reduced decode relates to the full-size image: ``scale`` full-size pixels per decoded pixel (2, 4 or
    8), and the full-size image's upright ``size`` (width, height)."""

    scale: float
    size: tuple[int, int]


def load_image(path: str | Path) -> Image.Image:
    """Open a still image upright (EXIF orientation applied) and fully decoded, so corrupt files fail here.

    Raises ``ValueError`` naming the file when it cannot be read as an image.
    """
    return load_image_reduced(path)[0]


def load_image_reduced(path: str | Path, min_side: int | None = None) -> tuple[Image.Image, Reduction | None]:
    """``load_image``, but a JPEG whose longer side is at least twice ``min_side`` is decoded at the smallest of
    1/2, 1/4, 1/8 scale that keeps both sides at least ``min_side * side / longer side`` (Pillow's ``draft``: the
    decoder skips most of the work: 2x faster at 1/2 on a 12 MP photo, 3x at 1/4). Returns the upright image and its
    ``Reduction`` (None when decoded at full size: other formats, small JPEGs, ``min_side`` None)."""
    try:
        with Image.open(path) as image:
            full = image.size
            scale = _draft(image, min_side) if min_side and image.format == "JPEG" else 1
            image.load()
            turned = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)  # turned by 90 degrees: the sides swap
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an image already upright
            upright = image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read as an image: {exc}") from exc
    if scale == 1:
        return upright, None
    return upright, Reduction(scale, full[::-1] if turned else full)


def _reduced_size(size: tuple[int, int], min_side: int) -> tuple[int, int] | None:
    """The size to ask the JPEG decoder for: ``size`` scaled so its longer side is ``min_side``; None when that is
    more than half of it (no reduced scale would keep it)."""
    w, h = size
    ratio = min_side / max(w, h)
    if ratio > 0.5:
        return None
    return max(1, math.ceil(w * ratio)), max(1, math.ceil(h * ratio))


def _draft(image: Image.Image, min_side: int) -> float:
    """Ask the JPEG decoder for a reduced scale; the scale it took (1: none)."""
    wanted = _reduced_size(image.size, min_side)
    if wanted is None:
        return 1
    w = image.size[0]
    drafted = image.draft(image.mode, wanted)
    if drafted is None:  # a JPEG Pillow cannot draft (several tiles): decoded at full size
        return 1
    return w / drafted[1][2]  # the box of the full image in decoded pixels: (0, 0, w / scale, h / scale)


def _jpeg_scale(size: tuple[int, int], min_side: int | None) -> int:
    """The reduced scale (1, 2, 4 or 8) Pillow's ``draft`` takes when asked for ``_reduced_size``: the largest
    that keeps both sides at least that size (1: none)."""
    wanted = _reduced_size(size, min_side) if min_side else None
    if wanted is None:
        return 1
    fits = min(size[0] // wanted[0], size[1] // wanted[1])
    return next(s for s in (8, 4, 2, 1) if fits >= s)


def load_pixels(path: str | Path, min_side: int | None = None) -> tuple[Image.Image | np.ndarray, Reduction | None]:
    """``load_image_reduced``, but a complete 8-bit colour or grayscale JPEG comes back as a numpy array decoded
    by OpenCV (RGB (H, W, 3) or (H, W)), upright, at the same reduced scale, with the same pixels: the
    recognizer works on arrays, and copying Pillow's image into one (and its grayscale) costs half as much again
    as the decode (7 ms of 20 on a 12 MP photo at 1/4). Anything else (other formats, CMYK, a JPEG whose end is
    missing, which OpenCV would fill in grey rather than refuse) comes from ``load_image_reduced`` as a PIL
    image."""
    try:
        with Image.open(path) as image:  # the header only: format, mode, size, EXIF
            flags = ARRAY_JPEG_MODES.get(image.mode) if image.format in ARRAY_JPEG_FORMATS else None
            if flags is not None:
                scale = _jpeg_scale(image.size, min_side)
                turned = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
                full = image.size[::-1] if turned else image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        flags = None  # load_image_reduced says what is wrong
    if flags is not None:
        data = np.fromfile(path, np.uint8)
        if data[-2:].tobytes() == JPEG_END:
            pixels = cv2.imdecode(data, flags | REDUCED_FLAGS[scale])  # EXIF orientation applied, as PIL does
            if pixels is not None:
                return pixels, None if scale == 1 else Reduction(scale, full)
    return load_image_reduced(path, min_side)


def image_size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a PIL image or an image array."""
    return image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])


def to_gray(image: Image.Image | np.ndarray) -> np.ndarray:
    """8-bit grayscale (H, W) from a PIL image in any mode, or an array (H, W), (H, W, 3) RGB or (H, W, 4) RGBA."""
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
            return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # 3x faster than through PIL, for 12 MP photos
        image = array_to_pil(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        return np.clip(wide * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
    if image.mode == "F":
        return np.clip(np.asarray(image) + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(_opaque(image).convert("L"), dtype=np.uint8)


def _opaque(image: Image.Image) -> Image.Image:
    """Transparent pixels composited onto white, so a transparent background reads as background, not black."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """8-bit RGB (H, W, 3) for drawing on, transparency composited onto white as in ``to_gray``."""
    if isinstance(image, np.ndarray):
        image = array_to_pil(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.repeat(to_gray(image)[..., None], 3, axis=2)
    return np.array(_opaque(image).convert("RGB"), dtype=np.uint8)


def array_to_pil(array: np.ndarray) -> Image.Image:
    """A numpy image (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, values 0..255, as a PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"expected an image array (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.asarray(array, dtype=np.float64) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def crop_face(gray: np.ndarray, box: Box, margin: float = 0.1, size: int = FACE_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` uint8 face: ``box`` grown by ``margin`` per side, made square, edge-padded, resized
    (a grayscale image (H, W), or colour (H, W, 3): the face keeps its channels)."""
    side = max(box.w, box.h) * (1 + 2 * margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    side = max(1, round(side))
    h, w = gray.shape[:2]
    inside = gray[max(0, top) : max(0, min(h, top + side)), max(0, left) : max(0, min(w, left + side))]
    if inside.size == 0:
        raise ValueError(f"face box {box.as_list()} lies outside the {w}x{h} image")
    pad = (
        (max(0, -top), max(0, top + side - h)),
        (max(0, -left), max(0, left + side - w)),
        *[(0, 0)] * (gray.ndim - 2),
    )
    square = np.pad(inside, pad, mode="edge") if any(any(p) for p in pad) else inside
    return resize_face(square, size)


def resize_face(gray: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """Resize a grayscale face to ``size`` x ``size`` as the training-data reader does (PIL bilinear)."""
    if gray.shape[:2] == (size, size):
        return np.ascontiguousarray(gray, dtype=np.uint8)
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
