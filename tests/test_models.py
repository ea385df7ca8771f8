"""Shape, size and gradient checks for every model family.

Parameter counts are recomputed here from the architecture as described (layer by layer, with the
helpers below), not read back from the models, so an accidental change to a layer shows up as a
count mismatch. The ResNet counts are derived from torchvision's own published ImageNet counts.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet34_Weights
from torchvision.models.resnet import BasicBlock, ResNet

from fer_lightning.models.cnn3 import CNN3
from fer_lightning.models.compact import Blur, CompactResNet
from fer_lightning.models.linear import LogisticRegression
from fer_lightning.models.resnet import resnet18, resnet34
from fer_lightning.models.vgg import VGGFace

NUM_CLASSES = 7


def conv(cin: int, cout: int, k: int = 3, bias: bool = False) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def bn(channels: int) -> int:
    return 2 * channels  # weight and bias; running statistics are buffers


def linear(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


def basic_block(cin: int, cout: int) -> int:
    """torchvision BasicBlock: two bias-free 3x3 convs with BN, plus a 1x1 conv + BN shortcut when shapes change."""
    shortcut = conv(cin, cout, 1) + bn(cout) if cin != cout else 0
    return conv(cin, cout) + bn(cout) + conv(cout, cout) + bn(cout) + shortcut


def cnn3_count(padding: int, batch_norm: bool) -> int:
    total, cin, size = 0, 1, 48
    for width in (32, 64, 128):
        total += conv(cin, width, bias=not batch_norm) + (bn(width) if batch_norm else 0)
        cin, size = width, (size - 2 + 2 * padding) // 2  # 3x3 conv, then 2x2 pool
    return total + linear(128 * size * size, 128) + linear(128, NUM_CLASSES)


def vgg_count(image_size: int) -> int:
    total, cin = 0, 1
    for width in (64, 128, 256, 512):
        total += conv(cin, width) + bn(width) + conv(width, width) + bn(width)
        cin = width
    flat = 512 * (image_size // 16) ** 2
    return total + linear(flat, 4096) + linear(4096, 4096) + linear(4096, NUM_CLASSES)


def compact_count(width: int, depths: tuple[int, ...], stem: str = "conv") -> int:
    if stem == "conv":
        total = conv(1, width // 2) + bn(width // 2) + conv(width // 2, width) + bn(width)
    else:  # space_to_depth: one 3x3 conv over the 4 pixels of each 2x2 block
        total = conv(4, width) + bn(width)
    cin = width
    for index, depth in enumerate(depths):
        cout = width * 2 ** (index + 1)
        total += basic_block(cin, cout) + (depth - 1) * basic_block(cout, cout)
        cin = cout
    return total + linear(cin, NUM_CLASSES)


def resnet_count(imagenet_count: int) -> int:
    """torchvision's ImageNet count, minus its 7x7 RGB stem and 1000-way head, plus our 3x3 gray stem and 7-way head."""
    return imagenet_count - conv(3, 64, 7) + conv(1, 64, 3) - linear(512, 1000) + linear(512, NUM_CLASSES)


# name -> (factory, input size, expected parameter count)
MODELS = {
    "cnn3": (lambda: CNN3(), 48, cnn3_count(padding=0, batch_norm=False)),
    "cnn3_regularised": (lambda: CNN3(padding=1, batch_norm=True, dropout=0.3), 48, cnn3_count(1, True)),
    "logistic_regression": (lambda: LogisticRegression(), 48, linear(48 * 48, NUM_CLASSES)),
    "vgg_48": (lambda: VGGFace(), 48, vgg_count(48)),
    "vgg_40": (lambda: VGGFace(image_size=40), 40, vgg_count(40)),
    "resnet18": (lambda: resnet18(), 48, resnet_count(ResNet18_Weights.IMAGENET1K_V1.meta["num_params"])),
    "resnet34": (lambda: resnet34(), 48, resnet_count(ResNet34_Weights.IMAGENET1K_V1.meta["num_params"])),
    "compact": (lambda: CompactResNet(), 48, compact_count(32, (1, 1, 1))),
    "compact_w16_d21": (lambda: CompactResNet(width=16, depths=(2, 1)), 48, compact_count(16, (2, 1))),
    # The blur is a fixed filter: no parameters of its own.
    "compact_antialias": (lambda: CompactResNet(antialias=True), 48, compact_count(32, (1, 1, 1))),
    "compact_space_to_depth": (
        lambda: CompactResNet(stem="space_to_depth", antialias=True),
        48,
        compact_count(32, (1, 1, 1), stem="space_to_depth"),
    ),
}

# Literal values of the expectations above, pinned so that a wrong helper cannot hide a wrong model.
PINNED_COUNTS = {
    "cnn3": 355_847,  # 320 + 18,496 + 73,856 + 262,272 (2048 -> 128) + 903
    "cnn3_regularised": 683_751,
    "logistic_regression": 16_135,
    "vgg_48": 40_374_599,
    "vgg_40": 29_888_839,  # vgg_48 minus (4608 - 2048) * 4096 in the first dense layer
    "resnet18": 11_171_271,  # 11,689,512 - 9,408 + 576 - 513,000 + 3,591
    "resnet34": 21_279_431,  # 21,797,672, same corrections
    "compact": 1_213_559,
    "compact_space_to_depth": 1_209_927,  # compact - (144 + 32) - (4,608 + 64) + (1,152 + 64)
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_output_shape_and_parameter_count(name):
    factory, size, expected = MODELS[name]
    model = factory().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, NUM_CLASSES)
    assert n_params(model) == expected
    if name in PINNED_COUNTS:
        assert expected == PINNED_COUNTS[name]


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    factory, size, _ = MODELS[name]
    torch.manual_seed(0)
    model = factory().train()
    nn.functional.cross_entropy(model(torch.randn(2, 1, size, size)), torch.tensor([0, 6])).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


def test_48x48_models_also_accept_40x40_crops():
    """Ten-crop training (the VGG paper's recipe) feeds 40x40 crops; the pooled models need no change for it."""
    x = torch.randn(2, 1, 40, 40)
    with torch.no_grad():
        for model in (CompactResNet(), resnet18(), CNN3(padding=1, batch_norm=True, image_size=40)):
            assert model.eval()(x).shape == (2, NUM_CLASSES)


def test_vgg_flattens_2x2x512_at_40px_as_in_the_reference_code():
    assert VGGFace(image_size=40, hidden=8).classifier[1].in_features == 512 * 2 * 2
    assert VGGFace(image_size=48, hidden=8).classifier[1].in_features == 512 * 3 * 3
    with pytest.raises(ValueError):
        VGGFace(image_size=8)


@pytest.mark.parametrize("factory, blocks", [(resnet18, 8), (resnet34, 16)])
def test_resnet_is_torchvisions_with_a_small_image_stem(factory, blocks):
    model = factory()
    assert isinstance(model, ResNet)
    residual_blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(residual_blocks) == blocks
    assert all(type(m) is BasicBlock for m in residual_blocks)
    stem = model.conv1
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride) == (1, 64, (3, 3), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    assert model.fc.out_features == NUM_CLASSES


def test_constructor_arguments_are_honoured():
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        for model in (
            VGGFace(num_classes=5, in_channels=3, hidden=64),
            resnet18(num_classes=5, in_channels=3),
            CompactResNet(num_classes=5, in_channels=3, width=16, depths=(1, 1, 1, 1)),
        ):
            assert model.eval()(x).shape == (2, 5)
    assert VGGFace(dropout=0.5, hidden=8).classifier[3].p == 0.5
    assert CompactResNet(dropout=0.4).head[2].p == 0.4
    with pytest.raises(ValueError):
        CompactResNet(depths=(1, 0, 1))


def test_blur_keeps_flat_regions_and_removes_the_finest_pattern():
    """A low-pass filter: a constant image passes unchanged (edges included, thanks to the reflection
    padding), and a one-pixel checkerboard, the pattern a stride-2 layer aliases worst, flattens to its mean."""
    flat = torch.full((1, 2, 6, 6), 3.0)
    assert torch.allclose(Blur(2)(flat), flat)
    checkerboard = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    blurred = Blur(1)(checkerboard.float().expand(1, 1, 8, 8))
    assert torch.allclose(blurred[..., 1:-1, 1:-1], torch.full((1, 1, 6, 6), 0.5))


def test_antialias_is_off_by_default_so_earlier_checkpoints_keep_loading():
    plain, blurred = CompactResNet(), CompactResNet(antialias=True)
    assert not any(isinstance(m, Blur) for m in plain.modules())
    assert sum(isinstance(m, Blur) for m in blurred.modules()) == 4  # the stem's stride-2 conv and 3 stages
    assert set(plain.state_dict()) != set(blurred.state_dict())  # the layers after each blur move by one
    assert not any("kernel" in name for name in blurred.state_dict())  # the filter is rebuilt, not saved


def test_space_to_depth_stem_sees_every_pixel_once_at_half_resolution():
    """The stem's first layer is a lossless reshape: each 2x2 block of the face becomes 4 channels of one
    pixel at 24 px, so changing one input pixel changes the stem's conv input at exactly one place."""
    stem = CompactResNet(stem="space_to_depth").stem
    face = torch.rand(1, 1, 48, 48)
    blocks = stem[0](face)
    assert blocks.shape == (1, 4, 24, 24)
    assert torch.equal(blocks[0, :, 5, 7], face[0, 0, 10:12, 14:16].flatten())
    assert not any(isinstance(m, Blur) for m in stem.modules())  # nothing is subsampled, so nothing to blur
    with pytest.raises(ValueError, match="stem must be 'conv' or 'space_to_depth'"):
        CompactResNet(stem="patchify")
