"""The classification metrics every stage and report shares, from torchmetrics."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

PER_CLASS = ("precision", "recall", "f1")


def classification_metrics(num_classes: int) -> MetricCollection:
    """Overall scores plus per-class vectors and the confusion matrix, sharing one state where possible."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "balanced_acc": MulticlassAccuracy(num_classes, average="macro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
            "precision": MulticlassPrecision(num_classes, average=None),
            "recall": MulticlassRecall(num_classes, average=None),
            "f1": MulticlassF1Score(num_classes, average=None),
            "confusion": MulticlassConfusionMatrix(num_classes),
        }
    )


def flatten_metrics(values: dict[str, torch.Tensor], class_names: tuple[str, ...], prefix: str) -> dict[str, float]:
    """``{"acc": t, "f1": [7]}`` -> ``{"val/acc": .., "val/f1/happy": ..}``; the confusion matrix is left out."""
    flat: dict[str, float] = {}
    for name, value in values.items():
        if name == "confusion":
            continue
        if name in PER_CLASS:
            flat.update({f"{prefix}/{name}/{cls}": float(v) for cls, v in zip(class_names, value)})
        else:
            flat[f"{prefix}/{name}"] = float(value)
    return flat


def per_source_scores(
    labels: torch.Tensor, probs: torch.Tensor, origins: torch.Tensor, names: tuple[str, ...], prefix: str
) -> dict[str, float]:
    """Accuracy and face count of every member of a mixed source (``origins`` index ``names``)."""
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        mask = origins == i
        if mask.any():
            out[f"{prefix}/acc/{name}"] = float((probs[mask].argmax(1) == labels[mask]).float().mean())
            out[f"{prefix}/faces/{name}"] = int(mask.sum())
    return out
