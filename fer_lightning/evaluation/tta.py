"""Test-time augmentation: the views of a batch whose predicted probabilities are averaged.

``none``    the image as trained on (the centre crop of a crop-trained model).
``flip``    that view and its mirror image (2 views).
``tencrop`` the four corner and the centre crops of side ``crop`` and their mirrors (10 views), as in the
            published FER-2013 VGG recipes (train on random 40 px crops of the 48 px face, ten-crop at test).
            A model whose input is ``crop`` px gets the crops as they are; any other model (e.g. one trained
            on whole 48 px faces) gets each crop resized back to its input size with bilinear interpolation,
            i.e. a 1.2x zoom on five regions of the face.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fer_lightning.data.augment import center_crop

TTA_MODES = ("none", "flip", "tencrop")


def _fit(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bring square crops to the model's input side: as they are, or bilinearly resized."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def five_crops(images: torch.Tensor, crop: int) -> list[torch.Tensor]:
    """Top-left, top-right, bottom-left, bottom-right and centre crops of side ``crop``."""
    h, w = images.shape[-2:]
    if not 0 < crop <= min(h, w):
        raise ValueError(f"tta_crop={crop} must be in 1..{min(h, w)} for {h}x{w} images")
    corners = [images[..., top : top + crop, left : left + crop] for top in (0, h - crop) for left in (0, w - crop)]
    return [*corners, center_crop(images, crop)]


def tta_views(images: torch.Tensor, mode: str, input_size: int, crop: int = 40) -> list[torch.Tensor]:
    """The views of float images (N, 1, H, W) that ``mode`` averages over, each (N, 1, input_size, input_size)."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta={mode!r} is not one of {', '.join(TTA_MODES)}")
    if mode == "tencrop":
        views = [_fit(view, input_size) for view in five_crops(images, crop)]
    else:
        views = [center_crop(images, input_size) if images.shape[-1] > input_size else _fit(images, input_size)]
    if mode in ("flip", "tencrop"):
        views += [view.flip(-1) for view in views]
    return views


@torch.no_grad()
def view_logits(
    model: torch.nn.Module, images: torch.Tensor, mode: str, input_size: int, crop: int = 40
) -> torch.Tensor:
    """``model``'s logits (V, N, classes) for float images, one row per TTA view."""
    views = tta_views(images, mode, input_size, crop)
    # One forward pass over all views: better use of the batch than one call per view.
    return model(torch.cat(views)).float().view(len(views), len(images), -1)


def average_views(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The mean over views (dim 0) of ``softmax(logits / temperature)``: how TTA and ensembles average."""
    return (logits / temperature).softmax(-1).mean(0)
