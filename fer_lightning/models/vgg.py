"""The VGG variant of Khaireddin & Chen (2021), the best single network on FER-2013 without extra data (73.28 %).

Reference: Y. Khaireddin, Z. Chen, "Facial Emotion Recognition: State of the Art Performance on FER2013",
arXiv:2105.03588, and the authors' code (github.com/usef-kh/fer, ``models/vgg.py``).
"""

from __future__ import annotations

from torch import nn

STAGE_WIDTHS = (64, 128, 256, 512)


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU blocks, then a 2x2 max-pool that halves the map."""
    layers: list[nn.Module] = []
    for channels in (in_channels, out_channels):
        # The bias would be cancelled by the BatchNorm mean subtraction, so it is left out.
        layers += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)]
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class VGGFace(nn.Module):
    """Four VGG stages (64-128-256-512 channels, two convs each), then FC 4096 - FC 4096 - FC classes.

    What was followed is the authors' code, which is more specific than the paper's figure: every conv is
    3x3 with padding 1 and is followed by BatchNorm and ReLU (conv -> BN -> ReLU), each stage ends with a
    2x2 max-pool, the two hidden dense layers have 4096 units (``hidden``), and one dropout rate
    (``drop=0.2`` there, ``dropout`` here) follows each of them; there is no separate 0.5 rate.
    The only deliberate difference is that the convs carry no bias, which BatchNorm makes redundant
    (1,920 fewer parameters, same function class).

    The paper trains on 40x40 crops (ten-crop at test time), where four pools leave a 2x2x512 map
    (the reference flattens 512*2*2 = 2048 features); on full 48x48 faces the map is 3x3x512. The flatten
    size is therefore computed from ``image_size`` (``image_size // 16`` per side, as floor pooling gives),
    so the dense layers match the reference exactly for 40x40 and scale for 48x48 instead of being
    squeezed through an adaptive pool the paper does not have.
    Returns logits: softmax belongs to the loss and to inference.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_channels: int = 1,
        image_size: int = 48,
        dropout: float = 0.2,
        hidden: int = 4096,
    ) -> None:
        super().__init__()
        size = image_size // 2 ** len(STAGE_WIDTHS)
        if size < 1:
            raise ValueError(f"image_size={image_size} is too small for {len(STAGE_WIDTHS)} 2x2 pools")
        stages, channels = [], in_channels
        for width in STAGE_WIDTHS:
            stages.append(_stage(channels, width))
            channels = width
        self.features = nn.Sequential(*stages)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size * size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
