"""The seed CNN: three conv blocks and two dense layers, as in the original FER-2013 recipe."""

from __future__ import annotations

from torch import nn


def _conv_block(in_channels: int, out_channels: int, padding: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


class CNN3(nn.Module):
    """Conv(32)-Conv(64)-Conv(128), each 3x3 + ReLU + MaxPool(2), then Dense(128) and Dense(classes).

    The defaults (no padding, no batch norm, no dropout) are the seed architecture exactly;
    ``padding``, ``batch_norm`` and ``dropout`` give the regularised variant without a second class.
    Returns logits: softmax belongs to the loss and to inference.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_channels: int = 1,
        image_size: int = 48,
        padding: int = 0,
        batch_norm: bool = False,
        dropout: float = 0.0,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        widths = (32, 64, 128)
        blocks, channels, size = [], in_channels, image_size
        for width in widths:
            blocks.append(_conv_block(channels, width, padding, batch_norm))
            channels, size = width, (size - 2 * (1 - padding)) // 2
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * size * size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
