"""The Python API for emotion recognition in photos: ``EmotionRecognizer`` and its ``FaceResult``.

Two interchangeable backends run the classifier: a PyTorch checkpoint (``from_checkpoint``) or an ONNX model
written by ``fer-export`` (``from_onnx``). Both take raw 48x48 uint8 faces and return probabilities, so
everything around them (detection, cropping, batching) is shared. torch is imported only by the checkpoint
backend: an ONNX deployment needs numpy, Pillow, OpenCV and onnxruntime alone.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image, ImageOps

from fer_lightning.deploy import detectors
from fer_lightning.deploy.align import align_face
from fer_lightning.deploy.detectors import Detection
from fer_lightning.deploy.faces import (
    FACE_SIZE,
    Box,
    Reduction,
    array_to_pil,
    crop_face,
    image_size,
    load_pixels,
    resize_face,
    to_gray,
    to_rgb,
)
from fer_lightning.deploy.pretrained import DEFAULT, PRETRAINED, pretrained_path

if TYPE_CHECKING:
    from fer_lightning.deploy.video import FrameResult

DETECTORS = (*detectors.NAMES, "none")  # auto (the best installed), retinaface, haar; none: the image is the face
CLASS_NAMES_KEY = "class_names"  # ONNX metadata_props key written by fer-export
MIN_SIDE = 32  # smallest max_side: the detectors' smallest input (the Haar cascade's window is 24 px, RetinaFace's 32)


@dataclass(frozen=True)
class FaceResult:
    """One face: its ``box`` [x, y, w, h] in pixels of the upright image, the top ``emotion`` with its
    ``confidence``, and ``probs`` for every class (they sum to 1); the ``detector`` that found it (``retinaface``,
    ``haar``, ``none``) and its ``detector_score`` (RetinaFace: the face probability; None for Haar and none,
    which give no score). In a video or stream (``stream``, ``fer_lightning.deploy.tracking``): the person's
    ``track_id``, and the probabilities smoothed over that person's frames with their top emotion; None for
    photos, which are never smoothed."""

    box: list[int]
    emotion: str
    confidence: float
    probs: dict[str, float]
    detector: str | None = None
    detector_score: float | None = None
    track_id: int | None = None
    smoothed_emotion: str | None = None
    smoothed_probs: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# What find_faces_in_file returns: the image as decoded (an RGB or grayscale array for a JPEG, else a PIL image),
# its Reduction, the full-size detections, the 48x48 crops.
FoundFaces = tuple[Image.Image | np.ndarray, Reduction | None, list[Detection], np.ndarray]


class Backend(Protocol):
    class_names: list[str]

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """uint8 faces (N, 48, 48) -> float probabilities (N, classes)."""
        ...


class TorchBackend:
    """A ``FERClassifier`` checkpoint behind ``RawPixelClassifier`` (loaded with ``weights_only=True``)."""

    def __init__(self, ckpt_path: str | Path, device: str | None = "auto") -> None:
        import torch

        from fer_lightning.deploy.checkpoint import (
            RawPixelClassifier,
            load_classifier,
            model_input_size,
            resolve_device,
        )

        self._torch = torch
        self.device = resolve_device(device)
        classifier = load_classifier(ckpt_path, self.device)
        self.model = RawPixelClassifier(classifier, model_input_size(classifier)).to(self.device).eval()
        self.class_names = list(classifier.class_names)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(np.ascontiguousarray(faces)).to(self.device)).cpu().numpy()


class OnnxBackend:
    """An ONNX model from ``fer-export`` run by ONNX Runtime (CUDA if the installed build has it, else CPU)."""

    def __init__(self, path: str | Path, class_names: Sequence[str] | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} does not exist")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
        providers = [p for p in wanted if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_dtype = np.uint8 if "uint8" in model_input.type else np.float32
        meta = self.session.get_modelmeta().custom_metadata_map
        if class_names is None and CLASS_NAMES_KEY in meta:
            class_names = json.loads(meta[CLASS_NAMES_KEY])
        if class_names is None:  # a model exported elsewhere: assume the FER-2013 label order
            from fer_lightning.labels import EMOTIONS

            class_names = EMOTIONS
        self.class_names = list(class_names)
        self.tta = meta.get("tta", "none")  # "flip": the graph averages each face with its mirror image
        try:  # a grey face: a model with NaN weights answers NaN to every input
            probe = self(np.full((1, FACE_SIZE, FACE_SIZE), 128, np.uint8))
        except Exception:  # a model exported elsewhere may want another input layout: checked per batch instead
            probe = None
        if probe is not None and not np.isfinite(probe).all():
            raise ValueError(f"{path}: the model outputs NaN or infinite values (broken weights?): refusing to use it")

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: faces.astype(self.input_dtype)})[0]


class EmotionRecognizer:
    """Find the faces in an image and classify each one's expression.

    ``detector``: ``auto`` (the best installed: ``retinaface`` if the ``detect`` extra is, else ``haar``),
    ``retinaface``, ``haar`` (OpenCV's frontal-face cascade) or ``none`` (the whole image is one cropped face);
    see ``fer_lightning.deploy.detectors``. ``max_side``: detect on a copy downscaled to this longer side (None:
    the detector's default, 640 for RetinaFace, 1280 for Haar); ``detector_threads``: its ONNX Runtime threads.
    ``align``: turn faces with landmarks upright and frame them as FER-2013 does (``fer_lightning.deploy.align``).
    ``margin``: fraction of the detected box's side added around it before resizing to 48x48, for faces cropped
    by their box (Haar, or ``align=False``; see ``fer_lightning.deploy.faces`` for every preprocessing step).
    Faces are classified ``batch_size`` at a time.

    Example::

        >>> from fer_lightning.deploy import EmotionRecognizer
        >>> recognizer = EmotionRecognizer.from_onnx("model.onnx")  # or .from_checkpoint("last.ckpt")
        >>> for face in recognizer.predict("photo.jpg"):  # a path, a PIL image or an RGB numpy array
        ...     print(face.box, face.emotion, round(face.confidence, 2))
        [149, 100, 231, 231] happy 0.87
        >>> recognizer.predict("empty_room.png")  # no face: an empty list
        []
    """

    def __init__(
        self,
        backend: Backend,
        detector: str = "auto",
        margin: float = 0.1,
        batch_size: int = 64,
        max_side: int | None = None,
        align: bool = True,
        detector_threads: int | None = None,
    ) -> None:
        if detector not in DETECTORS:
            raise ValueError(f"detector={detector!r} is not one of {', '.join(DETECTORS)}")
        if not margin >= 0 or batch_size < 1:
            raise ValueError(f"margin must be >= 0 and batch_size >= 1, got {margin} and {batch_size}")
        if max_side is not None and max_side < MIN_SIDE:
            raise ValueError(f"max_side must be >= {MIN_SIDE}, got {max_side}")
        self.backend = backend
        self.class_names = list(backend.class_names)
        self.detector = None if detector == "none" else detectors.make_detector(detector, max_side, detector_threads)
        self.detector_name = "none" if self.detector is None else self.detector.name
        self.align = align
        self.margin, self.batch_size = margin, batch_size

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = "auto", **kwargs) -> EmotionRecognizer:
        """From a training checkpoint (only from a source you trust: checkpoints are pickles)."""
        return cls(TorchBackend(path, device), **kwargs)

    @classmethod
    def pretrained(cls, name: str = DEFAULT, threads: int | None = None, **kwargs) -> EmotionRecognizer:
        """A model shipped inside the package: ``fer2013`` (7 classes, the default) or ``ferplus`` (8 classes)."""
        return cls.from_onnx(pretrained_path(name), threads=threads, **kwargs)

    @classmethod
    def from_model(cls, model: str | Path, threads: int | None = None, **kwargs) -> EmotionRecognizer:
        """``model``: the name of a shipped model, or the path of an ONNX file."""
        if str(model) in PRETRAINED:
            return cls.pretrained(str(model), threads=threads, **kwargs)
        return cls.from_onnx(model, threads=threads, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int | None = None, **kwargs) -> EmotionRecognizer:
        """From an ONNX model written by ``fer-export`` (no torch needed); ``threads``: ONNX Runtime's intra-op
        threads (default: one per core)."""
        return cls(OnnxBackend(path, threads=threads), **kwargs)

    def with_own_detector(self, threads: int | None = None) -> EmotionRecognizer:
        """A recognizer that shares this one's classifier and options but has a detector of its own (``threads``:
        its intra-op threads), for another thread to find faces with: OpenCV's cascade keeps working buffers in
        the object, so two threads must not share one."""
        clone = copy.copy(self)
        if self.detector is not None:
            clone.detector = detectors.make_detector(self.detector_name, self.detector.max_side, threads)
        return clone

    @property
    def decode_side(self) -> int | None:
        """The longer side a large JPEG is first decoded at, at least (``load``): the detector's ``max_side``, so
        the detector gets its full input from the cheapest decode. None without a detector: the image is the
        face."""
        return None if self.detector is None else self.detector.max_side

    def load(self, path: str | Path) -> tuple[Image.Image | np.ndarray, Reduction | None]:
        """The image at ``path`` upright (``load_pixels``: a JPEG as an array, a large one decoded at a reduced
        scale, ``decode_side``), with the ``Reduction`` to pass to ``find_faces`` (None: full size)."""
        return load_pixels(path, self.decode_side)

    def find_faces_in_file(self, path: str | Path) -> FoundFaces:
        """``find_faces`` on the image at ``path``: the image as decoded (``load``) with its ``Reduction``, the
        detections in the full-size image's pixels, and the 48x48 crops.

        Faces are found in the cheap reduced decode; only where one of them is smaller than 48 px there is the
        file decoded again, at the scale that gives its smallest face 48 px (or at full size), and the faces
        are cropped from that: every face is as sharp as the photo allows, and a photo of large faces, the
        common case, is decoded once at the smallest scale.
        """
        image, reduction = self.load(path)
        gray, found = self._detect(image)
        full_size = self._full_size(found, reduction)
        sharper = self._sharper_side(found, reduction)
        if sharper is None:
            return image, reduction, full_size, self._crops(gray, found)
        sharp, sharp_reduction = load_pixels(path, sharper)
        local = full_size
        if sharp_reduction:
            local = [d.scaled(1 / sharp_reduction.scale, image_size(sharp)) for d in full_size]
        return image, reduction, full_size, self._crops(to_gray(sharp), local)

    def _sharper_side(self, found: list[Detection], reduction: Reduction | None) -> int | None:
        """The longer side to decode at again so the smallest face found is ``FACE_SIZE`` px; None when the
        decode has no finer scale (full size) or every face is large enough in it."""
        if reduction is None or not found:
            return None
        smallest = min(min(d.w, d.h) for d in found)
        if smallest >= FACE_SIZE:
            return None
        return math.ceil(max(reduction.size) / reduction.scale * FACE_SIZE / max(1, smallest))

    @staticmethod
    def _full_size(found: list[Detection], reduction: Reduction | None) -> list[Detection]:
        return found if reduction is None else [d.scaled(reduction.scale, reduction.size) for d in found]

    def find_faces(
        self, image: np.ndarray | Image.Image, reduction: Reduction | None = None
    ) -> tuple[list[Detection], np.ndarray]:
        """Detections (boxes with score and landmarks) and their 48x48 uint8 crops (N, 48, 48) in an image:
        grayscale (H, W), or in colour (an RGB / RGBA array, a PIL image), which colour detectors make use of.

        A face with landmarks is aligned (turned upright, framed as in FER-2013: ``fer_lightning.deploy.align``)
        unless ``align=False``; otherwise its box grown by ``margin`` is cropped. ``reduction``: ``image`` is a
        reduced decode (``load``): faces are cropped from it, and the detections come back in the full-size
        image's pixels (``find_faces_in_file`` also decodes again where a face is too small).
        """
        gray, found = self._detect(image)
        return self._full_size(found, reduction), self._crops(gray, found)

    def _detect(self, image: np.ndarray | Image.Image) -> tuple[np.ndarray, list[Detection]]:
        """The image in grayscale and the faces in it (with no detector: the whole image)."""
        gray_only = isinstance(image, np.ndarray) and image.ndim == 2
        gray = image if gray_only else to_gray(image)
        if self.detector is None:
            h, w = gray.shape
            return gray, [Detection(0, 0, w, h)]
        rgb = self._color_copy(image) if self.detector.uses_color and not gray_only else None
        return gray, self.detector(gray, rgb)

    def crops(self, image: np.ndarray | Image.Image, found: Sequence[Detection]) -> np.ndarray:
        """The 48x48 crops of the faces at ``found`` (a tracker's carried detections) in ``image``, aligned and
        framed as ``find_faces`` crops detected ones."""
        gray = image if isinstance(image, np.ndarray) and image.ndim == 2 else to_gray(image)
        return self._crops(gray, list(found))

    def _crops(self, gray: np.ndarray, found: list[Detection]) -> np.ndarray:
        if self.detector is None:
            return resize_face(gray)[None]
        faces = [
            align_face(gray, d.landmarks) if self.align and d.landmarks else crop_face(gray, d, self.margin)
            for d in found
        ]
        return np.stack(faces) if faces else np.empty((0, FACE_SIZE, FACE_SIZE), np.uint8)

    def _color_copy(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """The image in colour for the detector, a PIL image first shrunk by an integer factor (Pillow's fast
        ``reduce``) to no less than the detector's ``max_side``: converting a 12 MP photo whole to an array costs
        more than detecting the faces in it."""
        if isinstance(image, np.ndarray):
            if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
                return image
            image = array_to_pil(image)
        factor = max(1, max(image.size) // self.detector.max_side)
        if factor > 1:
            try:
                image = image.reduce(factor)
            except ValueError:  # a mode reduce does not take (palette): converted whole
                pass
        return to_rgb(image)

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for uint8 faces (N, 48, 48), ``batch_size`` faces per call."""
        if len(faces) == 0:
            return np.empty((0, len(self.class_names)), np.float32)
        probs = np.concatenate(
            [self.backend(faces[i : i + self.batch_size]) for i in range(0, len(faces), self.batch_size)]
        )
        if not np.isfinite(probs).all():  # never reported as a result: NaN is no probability (and not JSON)
            raise ValueError("the model returned NaN or infinite probabilities: it is broken; re-export it")
        return probs

    def results(self, boxes: Sequence[Box], probs: np.ndarray) -> list[FaceResult]:
        """One ``FaceResult`` per box (a ``Detection`` brings its score) and row of probabilities."""
        out = []
        for box, p in zip(boxes, probs):
            best = int(np.argmax(p))
            out.append(
                FaceResult(
                    box=box.as_list(),
                    emotion=self.class_names[best],
                    confidence=float(p[best]),
                    probs={name: float(v) for name, v in zip(self.class_names, p)},
                    detector=self.detector_name,
                    detector_score=box.score if isinstance(box, Detection) else None,
                )
            )
        return out

    def stream(
        self,
        source: str | Path | int | Iterable[np.ndarray],
        every: int = 1,
        smooth: float = 0.5,
        max_gap: float = 1.0,
        fps: float = 30.0,
        detect_every: int = 1,
    ) -> Iterator[FrameResult]:
        """The faces of every ``every``-th frame of a video file, a webcam (its index) or an iterable of RGB frames
        (timed at ``fps``), one ``FrameResult`` per frame as it comes: each face with its ``track_id`` (the same
        person keeps it across frames, through gaps up to ``max_gap`` seconds) and its probabilities smoothed
        over that person's frames (time constant ``smooth`` seconds; 0: off). ``detect_every=N`` finds faces in
        every N-th frame only; in between, the tracks carry each face to where it is predicted and the classifier
        runs on those crops. See ``fer_lightning.deploy.tracking``.

            >>> for frame in recognizer.stream("interview.mp4", smooth=0.5):
            ...     print(frame.time_s, [(f.track_id, f.smoothed_emotion) for f in frame.faces])
        """
        from fer_lightning.deploy.video import stream_faces

        return stream_faces(self, source, every, smooth, max_gap, fps, detect_every)

    def predict(self, image: str | Path | Image.Image | np.ndarray) -> list[FaceResult]:
        """Every face found in ``image`` (a path, a PIL image, or a numpy array (H, W), (H, W, 3) RGB or
        (H, W, 4) RGBA), largest first; an empty list when there is none. A path to a large JPEG is decoded at a
        reduced scale (``load``); its boxes are still in the full-size image's pixels."""
        if isinstance(image, str | Path):
            _, _, boxes, faces = self.find_faces_in_file(image)
        else:
            if isinstance(image, Image.Image):
                image = ImageOps.exif_transpose(image)
            boxes, faces = self.find_faces(image)
        return self.results(boxes, self.classify(faces))
