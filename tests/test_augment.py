"""BatchAugment: shapes, range, determinism, per-sample variety, and each option's effect."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fer_lightning.data.augment import BatchAugment, affine_grid


def faces(n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 48, 48, generator=g) * 255


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_all_off_is_identity():
    x = faces()
    assert torch.equal(BatchAugment()(x, seeded()), x)


def test_shape_dtype_range_and_determinism():
    aug = BatchAugment(rotation=10, zoom=0.1, shift=0.1, hflip=True, erasing=0.5)
    x = faces()
    a, b = aug(x, seeded(1)), aug(x, seeded(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, seeded(2)))
    assert a.min() >= 0 and a.max() <= 255


def test_parameters_differ_per_sample():
    x = faces(1).repeat(8, 1, 1, 1)
    out = BatchAugment(rotation=20, shift=0.1)(x, seeded())
    # The centre row: always inside the face, where the corners may all be padding.
    assert len({tuple(o[0, 24].tolist()) for o in out}) == 8


def test_hflip_alone_mirrors_some_images_exactly():
    x = faces(32)
    out = BatchAugment(hflip=True)(x, seeded())
    flipped = [torch.allclose(o, i.flip(-1), atol=1e-3) for o, i in zip(out, x)]
    kept = [torch.allclose(o, i, atol=1e-3) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_random_crop_size_and_content():
    x = torch.arange(48.0).repeat(48, 1).expand(4, 1, 48, 48).contiguous()
    out = BatchAugment(crop_size=40)(x, seeded())
    assert out.shape == (4, 1, 40, 40)
    # A pure crop keeps the horizontal ramp: consecutive columns differ by one grey level.
    assert torch.allclose(out[..., 1:] - out[..., :-1], torch.ones(4, 1, 40, 39), atol=0.02)


def test_erasing_blanks_a_rectangle_in_about_p_of_images():
    x = faces(400) + 1  # nothing is 0 before erasing
    out = BatchAugment(erasing=0.5)(x, seeded())
    erased = (out == 0).flatten(1).any(1).float().mean().item()
    assert 0.4 < erased < 0.6


@pytest.mark.parametrize("size", [40, 48])
def test_affine_grid_matches_torch(size):
    theta = torch.randn(5, 2, 3, generator=seeded())
    expected = F.affine_grid(theta, [5, 1, size, size], align_corners=False)
    assert torch.allclose(affine_grid(theta, size), expected, atol=1e-6)


@pytest.mark.parametrize("bad", [{"erasing": 1.5}, {"zoom": -0.1}, {"rotation": -1}])
def test_bad_ranges_are_rejected(bad):
    with pytest.raises(ValueError):
        BatchAugment(**bad)
