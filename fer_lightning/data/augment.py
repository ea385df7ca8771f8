"""Per-sample random augmentation of whole batches with tensor ops.

torchvision's v2 transforms draw one set of parameters per call, so applied to a batch every image
would get the same rotation; per-image calls in a DataLoader are what makes typical FER loops slow.
Here every geometric change of one image (rotation, zoom, shift, flip, random crop) is folded into
one affine matrix, and a single ``grid_sample`` warps the whole batch on its device.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from fer_lightning.data.appearance import AppearanceAugment


class BatchAugment:
    """Random geometry and erasing for a float batch (N, C, H, W); a no-op when every option is off.

    Ranges follow the Keras ``ImageDataGenerator`` of the seed recipe: ``rotation`` in degrees (+-),
    ``zoom`` as the relative scale range (+-), ``shift`` as a fraction of the side (+-).
    ``crop_size`` takes a random crop of that side (the VGG recipe's 40 px crops); evaluation then
    uses the centre crop. ``erasing`` is the probability of blanking a random rectangle (to 0,
    black) covering ``erasing_area`` of the image, as in Zhong et al.'s random erasing. ``aspect`` stretches
    the face by a factor in ``1 +- aspect`` in width and its inverse in height (framing by other detectors);
    ``appearance`` (an ``AppearanceAugment``) changes lighting and capture after the geometry, before erasing.
    """

    def __init__(
        self,
        rotation: float = 0.0,
        zoom: float = 0.0,
        shift: float = 0.0,
        hflip: bool = False,
        crop_size: int | None = None,
        erasing: float = 0.0,
        erasing_area: tuple[float, float] = (0.02, 0.25),
        erasing_ratio: tuple[float, float] = (0.3, 3.3),
        aspect: float = 0.0,
        appearance: AppearanceAugment | None = None,
    ) -> None:
        if not 0.0 <= erasing <= 1.0:
            raise ValueError(f"augment.erasing is a probability in [0, 1], got {erasing}")
        if zoom < 0 or zoom >= 1 or shift < 0 or rotation < 0 or not 0 <= aspect < 1:
            raise ValueError(
                f"augment ranges must be >= 0 (and zoom, aspect < 1): rotation={rotation}, zoom={zoom}, "
                f"shift={shift}, aspect={aspect}"
            )
        self.rotation, self.zoom, self.shift, self.hflip = rotation, zoom, shift, hflip
        self.crop_size = crop_size
        self.erasing, self.erasing_area, self.erasing_ratio = erasing, tuple(erasing_area), tuple(erasing_ratio)
        self.aspect, self.appearance = aspect, appearance

    def output_size(self, size: int) -> int:
        return self.crop_size or size

    @property
    def moves_pixels(self) -> bool:
        return bool(self.rotation or self.zoom or self.shift or self.hflip or self.crop_size or self.aspect)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.moves_pixels:
            images = self._warp(images, generator)
        if self.appearance is not None:
            images = self.appearance(images, generator)
        if self.erasing > 0:
            images = self._erase(images, generator)
        return images

    def _uniform(self, n: int, low: float, high: float, like: torch.Tensor, generator) -> torch.Tensor:
        return torch.rand(n, device=like.device, generator=generator, dtype=torch.float32) * (high - low) + low

    def _warp(self, images: torch.Tensor, generator) -> torch.Tensor:
        n, _, h, _ = images.shape
        size = self.output_size(h)
        # A crop of side `size` is the output grid shrunk by size/h and moved anywhere it still fits.
        crop = size / h
        reach = (1 - crop) + 2 * self.shift
        # One draw and few ops: at 64 images a batch, each small op costs about 1% of the warp itself.
        draws = torch.rand(n, 5, device=images.device, generator=generator, dtype=images.dtype).mul_(2).sub_(1)
        angle, zoom, flip, tx, ty = draws.unbind(1)
        angle = angle * math.radians(self.rotation)
        # Keras' zoom scales the sampling coordinates: above 1 shows more of the face, smaller.
        scale = zoom.mul(crop * self.zoom).add_(crop)
        flipped = torch.copysign(scale, flip) if self.hflip else scale
        if self.aspect:  # drawn apart, so that recipes without it keep their random stream
            stretch = torch.rand(n, device=images.device, generator=generator, dtype=images.dtype)
            stretch = stretch.mul_(2).sub_(1).mul_(self.aspect).add_(1)
            flipped, scale = flipped * stretch, scale / stretch
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([flipped * cos, -(scale * sin), tx * reach, flipped * sin, scale * cos, ty * reach], 1)
        grid = affine_grid(theta.view(n, 2, 3), size)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _erase(self, images: torch.Tensor, generator) -> torch.Tensor:
        n, _, h, w = images.shape
        area = self._uniform(n, *self.erasing_area, images, generator) * h * w
        log_ratio = self._uniform(
            n, math.log(self.erasing_ratio[0]), math.log(self.erasing_ratio[1]), images, generator
        )
        ratio = torch.exp(log_ratio)
        eh = torch.sqrt(area * ratio).clamp(1, h)
        ew = torch.sqrt(area / ratio).clamp(1, w)
        top = torch.rand(n, device=images.device, generator=generator) * (h - eh)
        left = torch.rand(n, device=images.device, generator=generator) * (w - ew)
        apply = torch.rand(n, device=images.device, generator=generator) < self.erasing
        rows = torch.arange(h, device=images.device).view(1, h, 1)
        cols = torch.arange(w, device=images.device).view(1, 1, w)
        inside = (
            (rows >= top.view(n, 1, 1))
            & (rows < (top + eh).view(n, 1, 1))
            & (cols >= left.view(n, 1, 1))
            & (cols < (left + ew).view(n, 1, 1))
            & apply.view(n, 1, 1)
        )
        return images.masked_fill(inside.unsqueeze(1), 0.0)


def affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, (n, c, size, size), align_corners=False)`` as one (2n, 3) x (3, size**2) matmul.

    ``F.affine_grid`` multiplies a batch of (size**2, 3) grids by (3, 2) matrices, which took 2 ms of a
    64-image batch on a CPU core here, 15x this and 4x the ``grid_sample`` it feeds. The result is a
    permuted view, which ``grid_sample`` reads as it is.
    """
    n = theta.shape[0]
    base = _pixel_centres(size, theta.device, theta.dtype)
    return (theta.reshape(2 * n, 3) @ base).view(n, 2, size, size).permute(0, 2, 3, 1)


@functools.lru_cache(maxsize=16)
def _pixel_centres(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Rows x, y, 1 of every output pixel centre in [-1, 1] (align_corners=False), row-major."""
    steps = (torch.arange(size, device=device, dtype=dtype) * 2 + 1) / size - 1
    return torch.stack(
        [steps.repeat(size), steps.repeat_interleave(size), torch.ones(size * size, device=device, dtype=dtype)]
    )


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The evaluation counterpart of a training-time random crop."""
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]
