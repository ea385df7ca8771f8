"""Heat maps of what drove a prediction: Grad-CAM for PyTorch checkpoints, occlusion for any model (ONNX too).

**Grad-CAM** (Selvaraju et al., 2017) takes the network's last feature map ``A`` (channels x h x w), weighs
each channel by the mean over the map of the gradient of the class's logit with respect to it, sums the
channels, keeps the positive part and upsamples the h x w map to the face. The feature map is the output of
the last module that still has one (h x w > 1) in a forward pass: the last residual block of a ResNet, the
last conv block of CNN3. Not simply the last ``nn.Conv2d``: in a residual block whose shortcut is projected,
the 1x1 shortcut convolution is both the last registered and the last run, and it sees only the block's input.
Grad-CAM needs gradients, so a PyTorch model (``EmotionRecognizer.from_checkpoint``, ``fer-predict --ckpt``).
It is implemented here in a few lines with forward hooks rather than taken from the ``grad-cam`` package: that
package is a source-only release that would add scikit-learn and ttach for this one function, and our networks
sit behind the raw-pixel wrapper (normalisation, a crop-trained model's centre crop), whose geometry the heat
map must follow anyway.

**Occlusion** (Zeiler and Fergus, 2014) needs only the model's outputs: it covers the face with a grey
square (the face's mean pixel value) at every position on a grid and records how much the class's probability
drops; each pixel gets the mean drop of the squares that covered it. It works with ONNX models (and with
networks without a convolution, such as ``model=logreg``), at the cost of one classifier call per position
(121 for 8 px squares every 4 px on a 48 px face).

Both give maps (N, 48, 48) in [0, 1] aligned with the 48x48 face the classifier saw; ``overlay`` colours one
over its face. This module imports torch only inside the Grad-CAM functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageDraw

from fer_lightning.deploy.faces import FACE_SIZE
from fer_lightning.deploy.recognizer import EmotionRecognizer, FaceResult, TorchBackend

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

METHODS = ("auto", "gradcam", "occlusion")


# ---- Grad-CAM ---------------------------------------------------------------------------------------------------
def last_conv(model: nn.Module) -> nn.Module | None:
    """The last ``nn.Conv2d`` registered in ``model``, or None: a network without one gets no Grad-CAM."""
    from torch import nn

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def feature_layer(model: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """The module of ``model`` that returns the last feature map (N, C, h, w with h x w > 1) when ``example``
    goes through it (modules finish in order: a container after its children, so the outermost wins)."""
    import torch

    finished: list[nn.Module] = []

    def record(module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2] * output.shape[-1] > 1:
            finished.append(module)

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return finished[-1] if finished else None


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int],
    layer: nn.Module | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] of ``model`` (images (N, C, H, W) -> logits) for class ``targets[i]``
    of image ``i``, from the output of ``layer`` (default: ``feature_layer``, the last feature map)."""
    import torch
    import torch.nn.functional as F

    if layer is None and last_conv(model) is not None:
        layer = feature_layer(model, images[:1].float())
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no convolution for Grad-CAM: use the occlusion method")
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    captured: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        captured.append(output)
        return output.clone()  # later in-place ops (ReLU(inplace=True)) then leave the captured tensor intact

    handle = layer.register_forward_hook(keep)
    maps = []
    try:
        with torch.enable_grad():
            for start in range(0, len(images), batch_size):
                captured.clear()
                x = images[start : start + batch_size].detach().float().requires_grad_(True)
                logits = model(x)
                index = torch.as_tensor(list(targets[start : start + batch_size]), device=logits.device)
                score = logits.float().gather(1, index[:, None]).sum()
                activations = captured[-1]
                (gradients,) = torch.autograd.grad(score, activations)
                weights = gradients.float().mean(dim=(2, 3), keepdim=True)  # one weight per channel
                cam = F.relu((weights * activations.float()).sum(1, keepdim=True))
                cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
                maps.append((cam / peak).detach().cpu().numpy())
    finally:
        handle.remove()
    return np.concatenate(maps).astype(np.float32) if maps else np.empty((0, *images.shape[-2:]), np.float32)


def raw_pixel_grad_cam(wrapper: nn.Module, faces: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """Grad-CAM of a ``RawPixelClassifier`` (what ``fer-predict --ckpt`` runs) for uint8 faces (N, 48, 48): the
    same preprocessing as its forward pass; a crop-trained model's map covers its centre crop (zero outside)."""
    import torch

    from fer_lightning.data.augment import center_crop

    device = next(wrapper.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(faces)).to(device).float().reshape(-1, 1, FACE_SIZE, FACE_SIZE)
    size = wrapper.input_size
    if size != FACE_SIZE:
        x = center_crop(x, size)
    cams = grad_cam(wrapper.classifier, x, targets)
    if size == FACE_SIZE:
        return cams
    full = np.zeros((len(faces), FACE_SIZE, FACE_SIZE), np.float32)
    top = (FACE_SIZE - size) // 2  # as center_crop
    full[:, top : top + size, top : top + size] = cams
    return full


# ---- occlusion --------------------------------------------------------------------------------------------------
def occlusion(
    classify: Callable[[np.ndarray], np.ndarray],
    faces: np.ndarray,
    targets: Sequence[int],
    patch: int = 8,
    stride: int = 4,
) -> np.ndarray:
    """Occlusion maps (N, 48, 48) in [0, 1]: the mean drop of class ``targets[i]``'s probability when a ``patch``
    square (filled with the face's mean value) covers each pixel. ``classify``: uint8 faces -> probabilities."""
    faces = np.asarray(faces, dtype=np.uint8)
    n, h, w = faces.shape
    if len(targets) != n:
        raise ValueError(f"{n} faces but {len(targets)} targets")
    positions = [(y, x) for y in range(0, h - patch + 1, stride) for x in range(0, w - patch + 1, stride)]
    coverage = np.zeros((h, w), np.float32)
    for y, x in positions:
        coverage[y : y + patch, x : x + patch] += 1
    maps = np.zeros((n, h, w), np.float32)
    for i, (face, target) in enumerate(zip(faces, targets)):
        variants = np.repeat(face[None], len(positions) + 1, axis=0)
        fill = np.uint8(round(float(face.mean())))
        for k, (y, x) in enumerate(positions, start=1):
            variants[k, y : y + patch, x : x + patch] = fill
        probs = classify(variants)[:, target]
        drops = probs[0] - probs[1:]
        heat = np.zeros((h, w), np.float32)
        for drop, (y, x) in zip(drops, positions):
            heat[y : y + patch, x : x + patch] += drop
        heat = np.clip(heat / np.maximum(coverage, 1), 0, None)
        maps[i] = heat / heat.max() if heat.max() > 0 else heat
    return maps


# ---- for a recognizer -------------------------------------------------------------------------------------------
class Explainer:
    """Heat maps for an ``EmotionRecognizer``'s faces: ``method`` ``gradcam`` (checkpoints), ``occlusion`` (any
    model) or ``auto`` (Grad-CAM where the model is a PyTorch network with a convolution, else occlusion)."""

    def __init__(self, recognizer: EmotionRecognizer, method: str = "auto") -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
        backend = recognizer.backend
        torch_model = backend.model if isinstance(backend, TorchBackend) else None
        has_conv = torch_model is not None and last_conv(torch_model.classifier) is not None
        if method == "gradcam" and not has_conv:
            why = "a PyTorch checkpoint (--ckpt)" if torch_model is None else "a network with a convolution"
            raise ValueError(f"Grad-CAM needs {why}; use the occlusion method")
        self.method = method if method != "auto" else ("gradcam" if has_conv else "occlusion")
        self.recognizer, self.torch_model = recognizer, torch_model

    def __call__(self, faces: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        """Maps (N, 48, 48) in [0, 1] for uint8 faces (N, 48, 48) and one class index per face."""
        if len(faces) == 0:
            return np.empty((0, FACE_SIZE, FACE_SIZE), np.float32)
        if self.method == "gradcam":
            return raw_pixel_grad_cam(self.torch_model, faces, targets)
        return occlusion(self.recognizer.classify, faces, targets)

    def for_results(self, faces: np.ndarray, results: Sequence[FaceResult]) -> np.ndarray:
        """Maps for each face's predicted emotion."""
        return self(faces, [self.recognizer.class_names.index(r.emotion) for r in results])


# ---- pictures ---------------------------------------------------------------------------------------------------
def overlay(face: np.ndarray, heat: np.ndarray, size: int = 192, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 (size, size, 3): the grayscale face with its heat map in the "jet" colours (blue: nothing,
    red: the most) blended over it, both upscaled bilinearly."""
    gray = cv2.resize(np.asarray(face, np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
    heat = cv2.resize(np.asarray(heat, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    coloured = cv2.applyColorMap(np.clip(heat * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    coloured = cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB).astype(np.float32)
    base = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    return np.clip((1 - alpha) * base + alpha * coloured + 0.5, 0, 255).astype(np.uint8)


def explanation_card(face: np.ndarray, heat: np.ndarray, caption: str, size: int = 192) -> Image.Image:
    """The face and its heat map side by side over a one-line caption: what ``fer-predict --explain`` writes."""
    left = Image.fromarray(face).resize((size, size), Image.Resampling.BILINEAR).convert("RGB")
    card = Image.new("RGB", (2 * size, size + 20), "white")
    card.paste(left, (0, 0))
    card.paste(Image.fromarray(overlay(face, heat, size)), (size, 0))
    ImageDraw.Draw(card).text((4, size + 4), caption, fill="black")
    return card


class ExplanationFolder:
    """``fer-predict --explain DIR``: ``DIR/<input stem>[_frame<N>]_face<i>.png`` for every face classified (a
    numbered suffix where a name is taken), each the face the model saw and its heat map for the predicted
    emotion."""

    def __init__(self, folder: str | Path, recognizer: EmotionRecognizer, method: str = "auto") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.explainer = Explainer(recognizer, method)
        self.written: list[Path] = []

    def write(self, source: str, frame: int | None, faces: np.ndarray, results: Sequence[FaceResult]) -> list[Path]:
        if not results:
            return []
        maps = self.explainer.for_results(faces, results)
        stem = Path(source).stem if not source.startswith("camera:") else source.replace(":", "_")
        stem += f"_frame{frame}" if frame is not None else ""
        paths = []
        for i, (face, heat, result) in enumerate(zip(faces, maps, results)):
            path, n = self.folder / f"{stem}_face{i}.png", 0
            while path.exists():
                n += 1
                path = self.folder / f"{stem}_face{i}_{n}.png"
            caption = f"{result.emotion} {result.confidence:.2f}  ({self.explainer.method})"
            explanation_card(face, heat, caption).save(path)
            paths.append(path)
        self.written += paths
        return paths
