"""A small residual network sized for training on FER-2013 in about an hour on two CPU cores.

The cost of a 3x3 conv is channels_in * channels_out * pixels, and on a CPU the narrow, high-resolution
layers are also the least efficient ones (little arithmetic per byte of activation moved through
BatchNorm and ReLU). The design therefore spends as little as possible at 48x48 and 24x24 and puts the
depth where it is cheap: at 12, 6 and 3 pixels, where doubling the width each time the map halves keeps
every residual block at the same cost while the parameters, and the capacity, grow fourfold.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


class Blur(nn.Module):
    """A fixed 3x3 binomial low-pass filter, one per channel, applied before a stride-2 layer.

    Subsampling without it aliases: moving a face by one pixel changes which pixels a stride-2 conv keeps,
    so the features (and the prediction) move more than the face did (Zhang, "Making Convolutional Networks
    Shift-Invariant Again", ICML 2019). Blurring first, the cheap form MosaicML's BlurPool uses, costs one
    depthwise 3x3 conv per downsampling, far less than the strided conv itself.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        row = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(row, row) / 16
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).contiguous(), persistent=False)
        self.pad = nn.ReflectionPad2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(self.pad(x), self.kernel, groups=x.shape[1])


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _stage(in_channels: int, out_channels: int, depth: int, antialias: bool) -> nn.Sequential:
    """``depth`` torchvision BasicBlocks; the first halves the map and projects the shortcut with a 1x1 conv.

    With ``antialias`` one blur before the first block serves both of its stride-2 paths.
    """
    shortcut = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False), nn.BatchNorm2d(out_channels)
    )
    blocks = [Blur(in_channels)] if antialias else []
    blocks.append(BasicBlock(in_channels, out_channels, stride=2, downsample=shortcut))
    blocks += [BasicBlock(out_channels, out_channels) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


def _stem(in_channels: int, width: int, kind: str, antialias: bool) -> nn.Sequential:
    """The layers that take the 48 px face to ``width`` channels at 24 px.

    ``"conv"``: a 3x3 conv at full resolution, then a stride-2 one. ``"space_to_depth"``: each 2x2 block
    of pixels becomes 4 channels of a 24 px map (a lossless reshape, as in TResNet's stem, Ridnik et al.
    2021), then one 3x3 conv, together a stride-2 6x6 conv. At 48 px the layers are narrow, and on a CPU
    narrow layers do little arithmetic per byte they move: without the full-resolution conv, its BatchNorm
    and its blur, a training step runs 1.34 times as fast in fp32 and 1.48 times in bf16 (``make bench``).
    """
    if kind == "space_to_depth":
        return nn.Sequential(nn.PixelUnshuffle(2), _conv_bn_relu(in_channels * 4, width, stride=1))
    if kind != "conv":
        raise ValueError(f"stem must be 'conv' or 'space_to_depth', got {kind!r}")
    layers = [_conv_bn_relu(in_channels, width // 2, stride=1)]
    layers += [Blur(width // 2)] if antialias else []
    layers.append(_conv_bn_relu(width // 2, width, stride=2))
    return nn.Sequential(*layers)


class CompactResNet(nn.Module):
    """A stem (48 -> 24 px), residual stages at 12, 6 and 3 px, global average pooling, dropout, linear.

    With the defaults (``width=32``, ``depths=(1, 1, 1)``): conv 1->16 at 48x48, conv 16->32 stride 2
    to 24x24, then one BasicBlock per stage with 64, 128 and 256 channels; 8 weight layers deep
    (10 with the 1x1 shortcuts), 1.21M parameters, about twice CNN3's arithmetic per image.
    The stem is plain convs rather than a residual stage because a block at 24x24 would cost as much as
    one at 12x12 yet runs at half the speed per operation on a CPU. Global average pooling replaces a
    large dense layer (CNN3 puts 147k of its 356k parameters there, VGGFace 27M of its 40M), BatchNorm
    makes a high learning rate safe in a short schedule, and dropout sits only before the classifier.

    ``width`` scales every layer (channels ``width // 2`` in the stem's first conv, ``width * 2**(i+1)``
    in stage ``i``); ``depths`` sets the number of blocks per stage and, by its length, the number of
    stages (each halves the map: 3 stages suit 40-48 px inputs). ``antialias`` blurs before every
    stride-2 layer (see :class:`Blur`); off by default, which keeps the layer names of earlier checkpoints.
    ``stem="space_to_depth"`` replaces the two stem convs with one at 24 px (see :func:`_stem`).
    Returns logits.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_channels: int = 1,
        width: int = 32,
        depths: Sequence[int] = (1, 1, 1),
        dropout: float = 0.2,
        antialias: bool = False,
        stem: str = "conv",
    ) -> None:
        super().__init__()
        if not depths or min(depths) < 1:
            raise ValueError(f"depths must be a non-empty sequence of positive block counts, got {depths!r}")
        self.stem = _stem(in_channels, width, stem, antialias)
        stages, channels = [], width
        for index, depth in enumerate(depths):
            stages.append(_stage(channels, width * 2 ** (index + 1), depth, antialias))
            channels = width * 2 ** (index + 1)
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels, num_classes),
        )
        # The initialisation torchvision's ResNet uses, so this model and resnet18 start alike.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))
