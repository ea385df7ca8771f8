"""torchvision's ResNet-18/34, re-stemmed for 48x48 grayscale faces and always randomly initialised.

The blocks, stages and head are torchvision's own (``ResNet`` + ``BasicBlock``), so any difference from the
reference architecture is confined to the stem replaced here.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


def _small_image_resnet(layers: list[int], num_classes: int, in_channels: int, zero_init_residual: bool) -> ResNet:
    """Build a BasicBlock ResNet whose stem keeps the full 48x48 resolution.

    The ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool) divides the input by 4 before the first
    block: a 48x48 face would enter ``layer1`` at 12x12 and reach ``layer4`` at 2x2, too coarse for the
    small muscle movements that separate expressions. As for CIFAR, the stem becomes one 3x3 stride-1 conv
    and no pool, so the stages run at 48, 24, 12 and 6 pixels before global average pooling. The 3x3 conv
    also accepts ``in_channels`` (1 for FER-2013) instead of RGB. No pretrained weights are ever loaded:
    ImageNet filters would not fit the new stem anyway.
    """
    model = ResNet(BasicBlock, layers, num_classes=num_classes, zero_init_residual=zero_init_residual)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as ResNet inits its convs
    model.maxpool = nn.Identity()
    return model


def resnet18(num_classes: int = 7, in_channels: int = 1, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (2-2-2-2 BasicBlocks, 64-128-256-512 channels) with a 48x48 stem; returns logits."""
    return _small_image_resnet([2, 2, 2, 2], num_classes, in_channels, zero_init_residual)


def resnet34(num_classes: int = 7, in_channels: int = 1, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34 (3-4-6-3 BasicBlocks, 64-128-256-512 channels) with a 48x48 stem; returns logits."""
    return _small_image_resnet([3, 4, 6, 3], num_classes, in_channels, zero_init_residual)
