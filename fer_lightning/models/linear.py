"""Multinomial logistic regression on raw pixels: the floor any CNN must clear."""

from __future__ import annotations

from torch import nn


class LogisticRegression(nn.Sequential):
    """Flatten + one linear layer; with cross-entropy this is softmax regression on pixels."""

    def __init__(self, num_classes: int = 7, in_channels: int = 1, image_size: int = 48) -> None:
        super().__init__(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))
