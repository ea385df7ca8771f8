"""Random changes of lighting and capture, per image, for whole batches: what differs between FER-2013's web
photos and faces from elsewhere (lab photos, other cameras, video) besides the framing.

FER-2013's faces come from one kind of source, so a network trained on them alone learns their contrast, their
tone curve and their compression along with the expression; a face from another dataset then looks unlike any
training face. Drawing these per image, as torchvision's v2 transforms cannot for a batch (one draw a call),
keeps training at batch speed. The values are raw pixels 0..255, as the data module hands them over.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg


class AppearanceAugment:
    """Contrast, brightness, gamma, blur and JPEG artefacts for a float batch (N, C, H, W) of values 0..255.

    ``contrast``: each image's deviations from its mean scaled by a factor in ``1 +- contrast``;
    ``brightness``: an offset in ``+- brightness`` pixel values; ``gamma``: the tone curve
    ``255 * (x / 255) ** g`` with ``log g`` in ``+- log(1 + gamma)``; ``blur``: the probability of a Gaussian
    blur with sigma in ``blur_sigma`` px; ``jpeg``: the probability of a JPEG round trip at a quality in
    ``jpeg_quality``. All off (0) is a no-op. Draws come from ``generator``, so a seeded run repeats them.
    """

    def __init__(
        self,
        contrast: float = 0.0,
        brightness: float = 0.0,
        gamma: float = 0.0,
        blur: float = 0.0,
        blur_sigma: tuple[float, float] = (0.4, 1.2),
        jpeg: float = 0.0,
        jpeg_quality: tuple[int, int] = (30, 90),
    ) -> None:
        if not (0 <= contrast < 1 and brightness >= 0 and gamma >= 0):
            raise ValueError(
                f"appearance ranges must be >= 0 (contrast < 1): contrast={contrast}, brightness={brightness}, "
                f"gamma={gamma}"
            )
        for name, p in (("blur", blur), ("jpeg", jpeg)):
            if not 0 <= p <= 1:
                raise ValueError(f"appearance.{name} is a probability in [0, 1], got {p}")
        if not (0 < blur_sigma[0] <= blur_sigma[1] and 1 <= jpeg_quality[0] <= jpeg_quality[1] <= 100):
            raise ValueError(
                f"appearance: blur_sigma {blur_sigma} must be 0 < low <= high, jpeg_quality {jpeg_quality} in 1..100"
            )
        self.contrast, self.brightness, self.gamma = contrast, brightness, gamma
        self.blur, self.blur_sigma = blur, tuple(blur_sigma)
        self.jpeg, self.jpeg_quality = jpeg, tuple(jpeg_quality)

    @property
    def active(self) -> bool:
        return bool(self.contrast or self.brightness or self.gamma or self.blur or self.jpeg)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.active:
            return images
        n = images.shape[0]
        draws = torch.rand(n, 7, device=images.device, generator=generator, dtype=torch.float32)
        contrast, brightness, gamma = draws[:, :3].mul(2).sub(1).view(n, 3, 1, 1, 1).unbind(1)
        if self.contrast or self.brightness:
            mean = images.mean(dim=(1, 2, 3), keepdim=True)
            images = (images - mean) * (1 + self.contrast * contrast) + mean + self.brightness * brightness
            images = images.clamp(0, 255)
        if self.gamma:
            images = 255 * (images / 255).pow(torch.exp(gamma * math.log1p(self.gamma)))
        if self.blur:
            low, high = self.blur_sigma
            chosen = draws[:, 3] < self.blur
            sigma = low + draws[:, 4] * (high - low)
            images = torch.where(chosen.view(n, 1, 1, 1), gaussian_blur(images, sigma, math.ceil(3 * high)), images)
        if self.jpeg:
            images = self._jpeg(images, draws[:, 5] < self.jpeg, draws[:, 6])
        return images

    def _jpeg(self, images: torch.Tensor, chosen: torch.Tensor, quality_draw: torch.Tensor) -> torch.Tensor:
        """JPEG round trips of the chosen images on the CPU (torchvision's codec), one quality each."""
        low, high = self.jpeg_quality
        out = images.clone()
        for i in chosen.nonzero().flatten().tolist():
            quality = int(round(low + float(quality_draw[i]) * (high - low)))
            pixels = images[i].round().clamp(0, 255).to(torch.uint8).cpu()
            out[i] = decode_jpeg(encode_jpeg(pixels, quality=quality)).to(images.device, images.dtype)
        return out


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Each image (N, C, H, W) blurred with its own sigma (N,): separable kernels of side ``2 * radius + 1``,
    one grouped convolution per direction for the whole batch, edges reflected."""
    n, c, h, w = images.shape
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma.to(images.dtype).view(n, 1) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N * C, side)
    x = F.pad(images.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(n * c, 1, 1, -1), groups=n * c)
    x = F.conv2d(x, kernel.view(n * c, 1, -1, 1), groups=n * c)
    return x.view(n, c, h, w)
