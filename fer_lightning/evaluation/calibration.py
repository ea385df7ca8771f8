"""Calibration: does a predicted confidence of 0.8 mean right 80 % of the time?

Accuracy says nothing about it, and over-confident probabilities mislead whoever thresholds them (a deployed
``fer-predict`` shows them to users). The expected calibration error (ECE) is the bin-weighted mean gap between
confidence and accuracy over equal-width confidence bins; the reliability diagram shows the gap per bin.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassCalibrationError

from fer_lightning.evaluation.tta import average_views

N_BINS = 15


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Top-label ECE (L1) over ``n_bins`` equal-width bins, with torchmetrics' implementation."""
    metric = MulticlassCalibrationError(num_classes=probs.shape[1], n_bins=n_bins, norm="l1")
    return float(metric(probs.float().cpu(), labels.long().cpu()))


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict[str, torch.Tensor]:
    """Per confidence bin: sample count, mean confidence and accuracy (NaN for empty bins)."""
    confidence, predicted = probs.float().cpu().max(1)
    correct = (predicted == labels.cpu()).float()
    # Bins are (lo, hi] as torchmetrics bins them; a confidence of exactly 0 cannot occur with a softmax.
    which = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    counts = torch.bincount(which, minlength=n_bins).float()
    mean_conf = torch.bincount(which, weights=confidence, minlength=n_bins) / counts
    accuracy = torch.bincount(which, weights=correct, minlength=n_bins) / counts
    return {"edges": torch.linspace(0, 1, n_bins + 1), "count": counts, "confidence": mean_conf, "accuracy": accuracy}


def plot_reliability(
    probs: torch.Tensor, labels: torch.Tensor, path: str | Path, n_bins: int = N_BINS, title: str = ""
) -> float:
    """Write the reliability diagram (accuracy vs confidence per bin, over a histogram of confidences); returns ECE."""
    ece = expected_calibration_error(probs, labels, n_bins)
    bins = reliability_bins(probs, labels, n_bins)
    edges, width = bins["edges"][:-1].numpy(), 1.0 / n_bins
    fig = Figure(figsize=(5.5, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    accuracy = bins["accuracy"].nan_to_num(0).numpy()
    confidence = bins["confidence"].nan_to_num(0).numpy()
    top.bar(edges, accuracy, width=width, align="edge", color="tab:blue", edgecolor="black", label="accuracy")
    top.bar(
        edges,
        confidence - accuracy,
        bottom=accuracy,
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{title} reliability (ECE {ece:.4f}, {n_bins} bins)".strip())
    top.legend(loc="upper left")
    bottom.bar(edges, bins["count"].numpy(), width=width, align="edge", color="grey", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("samples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return ece


TEMPERATURE_RANGE = (0.1, 10.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 461) -> float:
    """The temperature T that minimises the negative log-likelihood of ``labels`` under the mean over views of
    ``softmax(logits / T)`` (temperature scaling, Guo et al., ICML 2017): one scalar, so it changes the
    confidences but never which class wins a view.

    ``logits`` (V, N, classes): one row per TTA view (and ensemble member), so T is fitted for the averaging the
    model is deployed with. A grid of ``steps`` values spaced evenly in log T over ``TEMPERATURE_RANGE`` (1 %
    apart by default): exact to that spacing, deterministic, and fast for a validation split.
    """
    logits, labels = logits.float().cpu(), labels.long().cpu()
    grid = torch.logspace(*torch.tensor(TEMPERATURE_RANGE).log10().tolist(), steps)
    nll = torch.stack([F.nll_loss(average_views(logits, t).clamp_min(1e-12).log(), labels) for t in grid])
    return float(grid[int(nll.argmin())])
