"""Trained models for inference: safe checkpoint loading, the model's input size, and the raw-pixel wrapper.

Evaluation, prediction and export all go through here, so a face is prepared for the network in exactly one
way whichever of them runs it.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch
import yaml
from torch import nn

from fer_lightning.data.augment import center_crop
from fer_lightning.data.splits import IMAGE_SIZE
from fer_lightning.module import FERClassifier

log = logging.getLogger("fer_lightning")


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
    try:
        model = FERClassifier.load_from_checkpoint(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a readable FERClassifier checkpoint: {exc}") from exc
    return model.eval().to(resolve_device(device))


def model_input_size(model: FERClassifier, ckpt_path: str | Path | None = None) -> int:
    """The side of the square images the network was trained on.

    A model trained on random crops (``data.augment.crop_size``, e.g. the VGG recipe's 40 px) is evaluated on
    the centre crop of that side. The checkpoint does not hold the data config, so look in order at: an
    ``input_size`` hyperparameter (saved by runs since it was added), the run's ``config.yaml``
    (``<run>/checkpoints/x.ckpt`` -> ``<run>/config.yaml``), the network's ``image_size`` hyperparameter, and
    finally the FER-2013 side, 48.
    """
    if model.hparams.get("input_size"):
        return int(model.hparams["input_size"])
    if ckpt_path is not None:
        config = Path(ckpt_path).expanduser().resolve().parent.parent / "config.yaml"
        if config.is_file():
            try:
                data = yaml.safe_load(config.read_text()) or {}
                crop = ((data.get("data") or {}).get("augment") or {}).get("crop_size")
            except (yaml.YAMLError, AttributeError) as exc:
                log.warning("ignoring unreadable %s (%s)", config, exc)
                crop = None
            if crop:
                return int(crop)
    size = (model.hparams.get("net") or {}).get("image_size")
    return int(size) if size else IMAGE_SIZE


class RawPixelClassifier(nn.Module):
    """Faces as raw pixel values in, class probabilities out: what ``fer-predict`` runs and ``fer-export`` writes.

    Takes (N, 48, 48) or (N, 1, 48, 48), uint8 or float, values 0..255. Casting, the channel dimension, the
    centre crop of a crop-trained model, the normalisation (the classifier's ``input_mean``/``input_std``
    buffers) and the softmax are all inside, so a deployed model needs no preprocessing code of ours.
    ``reshape`` rather than a branch on the rank keeps one traced graph valid for both layouts.
    ``classifier`` is a ``FERClassifier`` or its TorchScript trace (``fer-export`` scripts this wrapper).
    """

    def __init__(self, classifier: nn.Module, input_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        if not 0 < input_size <= IMAGE_SIZE:
            raise ValueError(f"input_size must be in 1..{IMAGE_SIZE}, got {input_size}")
        self.classifier = classifier.eval()
        self.input_size = input_size
        self.image_size = IMAGE_SIZE  # an attribute, not a global: TorchScript can read it

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(torch.float32).reshape(-1, 1, self.image_size, self.image_size)
        if self.input_size != self.image_size:
            x = center_crop(x, self.input_size)
        return self.classifier(x).float().softmax(-1)
