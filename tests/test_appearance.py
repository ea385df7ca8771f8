"""AppearanceAugment and BatchAugment's aspect: each option does what it says, per image, seeded; evaluate's
``shift=elsewhere`` scores changed faces."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fer_lightning.data.appearance import AppearanceAugment, gaussian_blur
from fer_lightning.data.augment import BatchAugment


def faces(n: int = 8) -> torch.Tensor:
    """Smooth faces-like images with edges: a bright disc on a gradient, 0..255."""
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    disc = ((ys - 24) ** 2 + (xs - 24) ** 2 < 15**2).float() * 120
    base = (xs * 2 + disc + 40).clamp(0, 255)
    return base.expand(n, 1, 48, 48).clone()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_all_off_is_identity_and_seeded_draws_repeat():
    x = faces()
    assert torch.equal(AppearanceAugment()(x, seeded()), x)
    aug = AppearanceAugment(contrast=0.4, brightness=20, gamma=0.4, blur=0.5, jpeg=0.5)
    a = aug(x, seeded(1))
    assert torch.equal(a, aug(x, seeded(1))) and not torch.equal(a, aug(x, seeded(2)))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 255
    assert len({tuple(img[0, 24].tolist()) for img in a}) == len(x), "every image gets its own draw"


def test_contrast_scales_the_spread_and_brightness_moves_the_mean():
    x = faces()
    contrast = AppearanceAugment(contrast=0.5)(x, seeded())
    ratio = contrast.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert ((ratio > 0.5 - 1e-4) & (ratio < 1.5 + 1e-4)).all() and ratio.std() > 0.05
    bright = AppearanceAugment(brightness=30)(x, seeded())
    moved = bright.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))
    assert moved.abs().max() <= 30 + 1e-3 and (moved > 1).any() and (moved < -1).any()


def test_gamma_keeps_black_and_white_and_bends_the_middle():
    x = torch.tensor([0.0, 64.0, 128.0, 255.0]).view(1, 1, 1, 4).repeat(16, 1, 1, 1)
    out = AppearanceAugment(gamma=0.5)(x, seeded())
    assert torch.allclose(out[..., 0], torch.zeros(16)) and torch.allclose(out[..., 3], torch.full((16,), 255.0))
    exponent = torch.log(out[..., 2] / 255) / np.log(128 / 255)
    assert (exponent > 1 / 1.5 - 1e-3).all() and (exponent < 1.5 + 1e-3).all() and exponent.std() > 0.05


def test_blur_matches_a_gaussian_kernel_and_keeps_the_mean():
    x = faces(2)
    out = gaussian_blur(x, torch.tensor([0.5, 1.5]), radius=5)
    side = torch.arange(-5.0, 6.0)
    for i, sigma in enumerate((0.5, 1.5)):
        k = torch.exp(-(side**2) / (2 * sigma**2))
        k2d = (k[:, None] * k[None, :]) / k.sum() ** 2
        padded = torch.nn.functional.pad(x[i : i + 1], (5, 5, 5, 5), mode="reflect")
        expected = torch.nn.functional.conv2d(padded, k2d.view(1, 1, 11, 11))
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-3, rtol=0)
    assert out[1].std() < out[0].std() < x[0].std(), "a larger sigma smooths more"
    chosen = AppearanceAugment(blur=0.5)(faces(64), seeded())
    changed = (chosen != faces(64)).flatten(1).any(1).float().mean()
    assert 0.3 < changed < 0.7, "blur=0.5 blurs about half the images"


def test_jpeg_round_trip_is_pillows_jpeg_at_the_drawn_quality():
    x = faces(1)
    out = AppearanceAugment(jpeg=1.0, jpeg_quality=(25, 25))(x, seeded())
    buffer = io.BytesIO()
    Image.fromarray(x[0, 0].numpy().astype(np.uint8)).save(buffer, format="JPEG", quality=25)
    pillow = torch.from_numpy(np.asarray(Image.open(buffer), dtype=np.float32))
    assert (out[0, 0] - pillow).abs().max() <= 2, "the same codec and quality, up to rounding in the IDCT"
    assert (out[0, 0] - x[0, 0]).abs().max() > 2, "quality 25 leaves artefacts"


def test_aspect_stretches_width_against_height_and_keeps_old_recipes_streams():
    x = torch.zeros(32, 1, 48, 48)
    x[:, :, 16:32, 16:32] = 255
    out = BatchAugment(aspect=0.3)(x, seeded())
    width = (out[:, 0, 24] > 127).sum(1).float()
    height = (out[:, 0, :, 24] > 127).sum(1).float()
    assert width.std() > 0.5 and torch.corrcoef(torch.stack([width, height]))[0, 1] < -0.5
    old = BatchAugment(rotation=10, zoom=0.1, shift=0.1, hflip=True)
    with_appearance = BatchAugment(rotation=10, zoom=0.1, shift=0.1, hflip=True, appearance=AppearanceAugment())
    assert torch.equal(old(faces(), seeded(3)), with_appearance(faces(), seeded(3)))


@pytest.mark.parametrize(
    "bad",
    [{"contrast": 1.0}, {"brightness": -1}, {"blur": 2.0}, {"jpeg": -0.1}, {"jpeg_quality": (0, 50)}],
)
def test_bad_appearance_ranges_are_rejected(bad):
    with pytest.raises(ValueError, match="appearance"):
        AppearanceAugment(**bad)
    with pytest.raises(ValueError, match="aspect"):
        BatchAugment(aspect=1.0)


def test_evaluate_scores_faces_shifted_once_and_records_the_shift(tmp_path):
    from hydra.utils import instantiate

    from fer_lightning.evaluate import evaluate, shifted
    from tests.conftest import compose_config

    overrides = ["pretrained=fer2013", "split=val", "data.source.val_size=70"]
    plain = evaluate(compose_config(overrides, tmp_path / "plain", "eval"))
    cfg = compose_config([*overrides, "shift=elsewhere"], tmp_path / "shifted", "eval")
    moved = evaluate(cfg)
    assert plain["shift"] is None and moved["shift"]["appearance"]["jpeg"] == 0.5
    assert moved["val/ece"] != plain["val/ece"], "the changed faces must change the probabilities"
    images = (torch.rand(6, 48, 48, generator=seeded()) * 255).to(torch.uint8)
    change = instantiate(cfg.shift)
    once = shifted(images, change, seed=0)
    assert once.dtype == torch.uint8 and once.shape == images.shape and not torch.equal(once, images)
    assert torch.equal(once, shifted(images, change, seed=0))
    with pytest.raises(ValueError, match="crop_size"):
        shifted(images, BatchAugment(crop_size=40), seed=0)
