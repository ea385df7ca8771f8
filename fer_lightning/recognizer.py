"""The Python API for emotion recognition in photos: ``EmotionRecognizer`` and its ``FaceResult``.

Two interchangeable backends run the classifier: a PyTorch checkpoint (``from_checkpoint``) or an ONNX model
written by ``fer-export`` (``from_onnx``). Both take raw 48x48 uint8 faces and return probabilities, so
everything around them (detection, cropping, batching) is shared. torch is imported only by the checkpoint
backend: an ONNX deployment needs numpy, Pillow, OpenCV and onnxruntime alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps

from fer_lightning.faces import FACE_SIZE, Box, HaarFaceDetector, crop_face, load_image, resize_face, to_gray

DETECTORS = ("haar", "none")
CLASS_NAMES_KEY = "class_names"  # ONNX metadata_props key written by fer-export


@dataclass(frozen=True)
class FaceResult:
    """One face: its ``box`` [x, y, w, h] in pixels of the upright image, the top ``emotion`` with its
    ``confidence``, and ``probs`` for every class (they sum to 1)."""

    box: list[int]
    emotion: str
    confidence: float
    probs: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


class Backend(Protocol):
    class_names: list[str]

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """uint8 faces (N, 48, 48) -> float probabilities (N, classes)."""
        ...


class TorchBackend:
    """A ``FERClassifier`` checkpoint behind ``RawPixelClassifier`` (loaded with ``weights_only=True``)."""

    def __init__(self, ckpt_path: str | Path, device: str | None = "auto") -> None:
        import torch

        from fer_lightning.inference import RawPixelClassifier, load_classifier, model_input_size, resolve_device

        self._torch = torch
        self.device = resolve_device(device)
        classifier = load_classifier(ckpt_path, self.device)
        self.model = RawPixelClassifier(classifier, model_input_size(classifier, ckpt_path)).to(self.device).eval()
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
            from fer_lightning.data.splits import EMOTIONS

            class_names = EMOTIONS
        self.class_names = list(class_names)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: faces.astype(self.input_dtype)})[0]


class EmotionRecognizer:
    """Find the faces in an image and classify each one's expression.

    ``detector``: ``haar`` (OpenCV's frontal-face cascade) or ``none`` (the whole image is one cropped face).
    ``margin``: fraction of the detected box's side added around it before resizing to 48x48 (see
    ``fer_lightning.faces`` for every preprocessing step). Faces are classified ``batch_size`` at a time.

    Example::

        >>> from fer_lightning.predict import EmotionRecognizer
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
        detector: str = "haar",
        margin: float = 0.1,
        batch_size: int = 64,
        max_side: int = 1280,
    ) -> None:
        if detector not in DETECTORS:
            raise ValueError(f"detector={detector!r} is not one of {', '.join(DETECTORS)}")
        if margin < 0 or batch_size < 1:
            raise ValueError(f"margin must be >= 0 and batch_size >= 1, got {margin} and {batch_size}")
        self.backend = backend
        self.class_names = list(backend.class_names)
        self.detector = HaarFaceDetector(max_side=max_side) if detector == "haar" else None
        self.margin, self.batch_size = margin, batch_size

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = "auto", **kwargs) -> EmotionRecognizer:
        """From a training checkpoint (only from a source you trust: checkpoints are pickles)."""
        return cls(TorchBackend(path, device), **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int | None = None, **kwargs) -> EmotionRecognizer:
        """From an ONNX model written by ``fer-export`` (no torch needed); ``threads``: ONNX Runtime's intra-op
        threads (default: one per core)."""
        return cls(OnnxBackend(path, threads=threads), **kwargs)

    def find_faces(self, gray: np.ndarray) -> tuple[list[Box], np.ndarray]:
        """Boxes and their 48x48 uint8 crops (N, 48, 48) in a grayscale image."""
        if self.detector is None:
            h, w = gray.shape
            return [Box(0, 0, w, h)], resize_face(gray)[None]
        boxes = self.detector(gray)
        faces = [crop_face(gray, box, self.margin) for box in boxes]
        return boxes, np.stack(faces) if faces else np.empty((0, FACE_SIZE, FACE_SIZE), np.uint8)

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for uint8 faces (N, 48, 48), ``batch_size`` faces per call."""
        if len(faces) == 0:
            return np.empty((0, len(self.class_names)), np.float32)
        return np.concatenate(
            [self.backend(faces[i : i + self.batch_size]) for i in range(0, len(faces), self.batch_size)]
        )

    def results(self, boxes: Sequence[Box], probs: np.ndarray) -> list[FaceResult]:
        out = []
        for box, p in zip(boxes, probs):
            best = int(np.argmax(p))
            out.append(
                FaceResult(
                    box=box.as_list(),
                    emotion=self.class_names[best],
                    confidence=float(p[best]),
                    probs={name: float(v) for name, v in zip(self.class_names, p)},
                )
            )
        return out

    def predict(self, image: str | Path | Image.Image | np.ndarray) -> list[FaceResult]:
        """Every face found in ``image`` (a path, a PIL image, or a numpy array (H, W), (H, W, 3) RGB or
        (H, W, 4) RGBA), largest first; an empty list when there is none."""
        if isinstance(image, str | Path):
            image = load_image(image)
        elif isinstance(image, Image.Image):
            image = ImageOps.exif_transpose(image)
        boxes, faces = self.find_faces(to_gray(image))
        return self.results(boxes, self.classify(faces))
