"""Trained models for inference: safe checkpoint loading, the model's input size, and the raw-pixel wrapper.

Evaluation, prediction and export all go through here, so a face is prepared for the network in exactly one
way whichever of them runs it.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning.data.augment import center_crop
from fer_lightning.labels import IMAGE_SIZE
from fer_lightning.training.module import FERClassifier

DEPLOY_TTA = ("none", "flip", "tencrop")  # the test-time augmentations a deployed model can carry in its graph
TENCROP_SIDE = 40  # evaluate's default tta_crop


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) picks CUDA when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_classifier(path: str | Path, device: str | torch.device | None = "cpu") -> FERClassifier:
    """Rebuild a ``FERClassifier`` from a checkpoint, in eval mode, with ``weights_only=True``.

    Checkpoints are pickles; ``weights_only`` refuses anything but tensors and plain containers, so a
    tampered file fails here instead of running code. Still: only load checkpoints you trust.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a directory, not a checkpoint file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint {path} {what}")
    _check_checkpoint(path)
    try:
        model = FERClassifier.load_from_checkpoint(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a checkpoint of this project: {_short(exc)}") from exc
    bad = nonfinite_tensors(model)
    if bad:
        raise ValueError(
            f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values (first: {bad[0]}); the run that saved "
            "it diverged: use an earlier checkpoint or retrain with a lower learning rate"
        )
    return model.eval().to(resolve_device(device))


NOT_OURS = "is not a checkpoint of this project (one saved by train.py)"


def _short(exc: BaseException) -> str:
    """The first line of an error, never torch's advice to load with ``weights_only=False``."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return type(exc).__name__ if "weights_only" in line or "Weights only" in line else line


def _check_checkpoint(path: Path) -> None:
    """Refuse, naming ``path``, a file that is not a FERClassifier checkpoint, before Lightning tries to build one.

    Loaded with ``weights_only=True`` and memory-mapped (nothing is copied). A file that holds Python objects other
    than tensors and plain containers is refused as such: loading it with ``weights_only=False`` would run code.
    """
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if not is_zip:  # torch.save has written zip archives since torch 1.6
        raise ValueError(f"{path} {NOT_OURS}: not a PyTorch checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} {NOT_OURS}: it holds Python objects other than tensors, which are not loaded for safety"
        ) from None
    except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError, KeyError, TypeError):
        raise ValueError(f"{path} {NOT_OURS}: not a PyTorch checkpoint file (or a damaged one)") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{path} {NOT_OURS}: it has no model weights (no 'state_dict')")
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or "net" not in hparams:
        raise ValueError(f"{path} {NOT_OURS}: it does not say which network it holds (no 'net' hyperparameter)")


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``module`` that hold a NaN or an infinity."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def model_input_size(model: FERClassifier) -> int:
    """The side of the square images the network was trained on: a model trained on random crops
    (``data.augment.crop_size``, e.g. the VGG recipe's 40 px) is evaluated on the centre crop of that side.
    Checkpoints save it as the ``input_size`` hyperparameter; older ones fall back to the net's ``image_size``."""
    if model.hparams.get("input_size"):
        return int(model.hparams["input_size"])
    size = (model.hparams.get("net") or {}).get("image_size")
    return int(size) if size else IMAGE_SIZE


class RawPixelClassifier(nn.Module):
    """Faces as raw pixel values in, class probabilities out: what ``fer-predict`` runs and ``fer-export`` writes.

    Takes (N, 48, 48) or (N, 1, 48, 48), uint8 or float, values 0..255. Casting, the channel dimension, the
    centre crop of a crop-trained model, the normalisation (the classifier's ``input_mean``/``input_std``
    buffers) and the softmax are all inside, so a deployed model needs no preprocessing code of ours.
    ``reshape`` rather than a branch on the rank keeps one traced graph valid for both layouts.
    ``classifier`` is a ``FERClassifier`` or its TorchScript trace (``fer-export`` scripts this wrapper).

    ``tta`` averages the probabilities of several views of each face inside the model, as evaluate's ``tta``
    does: ``flip``, the face and its mirror image (about a point of accuracy on FER-2013 for twice the
    classifier's work, which beside face detection costs next to nothing, so a deployed model can carry it);
    ``tencrop``, the four corner and the centre crops of side ``tta_crop`` brought to the input size, and their
    mirrors (10 views, 5x flip's work). The crops are only ever enlarged (``tta_crop`` at most the input size),
    where bilinear interpolation needs no antialiasing: ONNX's Resize then computes what evaluate does.
    ``temperature`` divides the logits before the softmax (evaluate's ``fit_temperature`` fits one): calibrated
    probabilities, the same predicted class.
    """

    def __init__(
        self,
        classifier: nn.Module,
        input_size: int = IMAGE_SIZE,
        tta: str = "none",
        tta_crop: int = TENCROP_SIDE,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 < input_size <= IMAGE_SIZE:
            raise ValueError(f"input_size must be in 1..{IMAGE_SIZE}, got {input_size}")
        if tta not in DEPLOY_TTA:
            raise ValueError(f"tta={tta!r} is not one of {', '.join(DEPLOY_TTA)}")
        if tta == "tencrop" and not 0 < tta_crop <= input_size:
            raise ValueError(f"tta_crop={tta_crop} must be in 1..{input_size} (the model's input size)")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.classifier = classifier.eval()
        self.input_size = input_size
        self.image_size = IMAGE_SIZE  # an attribute, not a global: TorchScript can read it
        self.tta = tta
        self.tta_crop = tta_crop
        self.temperature = float(temperature)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(torch.float32).reshape(-1, 1, self.image_size, self.image_size)
        if self.tta == "tencrop":
            x = self._five_crops(x)
        elif self.input_size != self.image_size:
            x = center_crop(x, self.input_size)
        if self.tta == "none":
            return (self.classifier(x).float() / self.temperature).softmax(-1)
        probs = (self.classifier(torch.cat([x, x.flip(-1)])).float() / self.temperature).softmax(-1)
        views = 10 if self.tta == "tencrop" else 2
        return probs.reshape(views, -1, probs.shape[-1]).mean(0)

    def _five_crops(self, x: torch.Tensor) -> torch.Tensor:
        """Top-left, top-right, bottom-left, bottom-right and centre crops, stacked (5N, 1, input_size,
        input_size): ``evaluation.tta.five_crops`` and ``_fit`` written for the graph (the crop was checked in
        ``__init__``; their check of it would make the ONNX tracer warn), and tested against them."""
        c, far = self.tta_crop, self.image_size - self.tta_crop
        crops = torch.cat([x[..., :c, :c], x[..., :c, far:], x[..., far:, :c], x[..., far:, far:], center_crop(x, c)])
        if c == self.input_size:
            return crops
        return F.interpolate(crops, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)


class ProbabilityAverage(nn.Module):
    """Several classifiers as one: the mean of their probabilities at ``temperature``, returned as logits that
    ``RawPixelClassifier`` at the same temperature turns back into exactly that mean (``T * log(mean p)``:
    the softmax of a log-probability is the probability). So a file of several members computes what
    evaluate's ensemble (``ckpt_path=[a,b]``) does, TTA views and temperature included. Every member normalises
    its input itself; the classes and input size, which every member must share, and the normalisation that the
    file's metadata reports are the first member's."""

    def __init__(self, members: list[FERClassifier], temperature: float = 1.0) -> None:
        super().__init__()
        first = members[0]
        expected = (list(first.class_names), model_input_size(first))
        for member in members[1:]:
            got = (list(member.class_names), model_input_size(member))
            if got != expected:
                raise ValueError(
                    f"an ensemble's members must share classes and input size: {expected[0]} at {expected[1]} px, "
                    f"{got[0]} at {got[1]} px"
                )
        self.members = nn.ModuleList(members)
        self.class_names = first.class_names
        self.hparams = first.hparams
        self.input_mean, self.input_std = first.input_mean, first.input_std
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([(member(x).float() / self.temperature).log_softmax(-1) for member in self.members])
        return (torch.logsumexp(logp, 0) - math.log(len(self.members))) * self.temperature
