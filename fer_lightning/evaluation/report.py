"""The evaluation report a run leaves behind: metrics, per-class table, confusion matrix, predictions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure
from torchmetrics.functional.classification import multiclass_f1_score, multiclass_precision, multiclass_recall

from fer_lightning.atomic import atomic_write
from fer_lightning.evaluation.metrics import classification_metrics, flatten_metrics


def classification_table(labels: torch.Tensor, probs: torch.Tensor, class_names: Sequence[str]) -> pd.DataFrame:
    """Per-class precision / recall / F1 / support with accuracy, macro and weighted rows (as sklearn prints)."""
    k = len(class_names)
    rows = {
        average: [
            fn(probs, labels, k, average=average).tolist()
            for fn in (multiclass_precision, multiclass_recall, multiclass_f1_score)
        ]
        for average in ("none", "macro", "weighted")
    }
    support = torch.bincount(labels, minlength=k)
    table = pd.DataFrame(
        {"precision": rows["none"][0], "recall": rows["none"][1], "f1": rows["none"][2], "support": support.tolist()},
        index=list(class_names),
    )
    accuracy = (probs.argmax(1) == labels).float().mean().item()
    table.loc["accuracy"] = [None, None, accuracy, int(support.sum())]
    for average in ("macro", "weighted"):
        table.loc[f"{average} avg"] = [*(float(v) for v in rows[average]), int(support.sum())]
    table["support"] = table["support"].astype(int)
    return table


def plot_confusion(confusion: torch.Tensor, class_names: Sequence[str], path: Path, title: str = "") -> None:
    """Counts and row-normalised (recall) matrices side by side, class names on both axes."""
    counts = confusion.float()
    normalised = counts / counts.sum(1, keepdim=True).clamp(min=1)
    fig = Figure(figsize=(13, 5.5))
    axes = fig.subplots(1, 2)
    for ax, matrix, name, fmt in (
        (axes[0], counts, "counts", "{:.0f}"),
        (axes[1], normalised, "row-normalised", "{:.2f}"),
    ):
        ax.imshow(matrix.numpy(), cmap="Blues")
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} {name}".strip())
        threshold = matrix.max().item() / 2
        for (i, j), value in zip(
            torch.cartesian_prod(torch.arange(len(class_names)), torch.arange(len(class_names))), matrix.flatten()
        ):
            ax.text(
                j,
                i,
                fmt.format(value),
                ha="center",
                va="center",
                color="white" if value > threshold else "black",
                fontsize=8,
            )
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")


def table_markdown(table: pd.DataFrame) -> str:
    """Four decimals for the scores, whole numbers for support, blanks where a row has no value."""
    blanks = table.astype(object).where(table.notna(), None)
    return blanks.to_markdown(floatfmt=("", ".4f", ".4f", ".4f", ".0f"), missingval="")


def write_report(
    out_dir: str | Path,
    labels: torch.Tensor,
    probs: torch.Tensor,
    index: torch.Tensor,
    class_names: Sequence[str],
    prefix: str = "test",
    extra: dict | None = None,
) -> pd.DataFrame:
    """Write metrics.json, classification_report.{md,csv}, confusion_matrix.png and predictions.csv.

    Every figure is computed here from the predictions themselves, so the files always agree
    with predictions.csv whatever produced the probabilities (a checkpoint, TTA, an ensemble).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels, probs, index = labels.cpu().long(), probs.cpu().float(), index.cpu().long()
    metrics = classification_metrics(len(class_names))
    values = metrics(probs, labels)
    summary = {**flatten_metrics(values, tuple(class_names), prefix), "num_samples": len(labels), **(extra or {})}
    # Each file appears whole (written beside, then renamed); metrics.json last, as the sign the report is done.
    table = classification_table(labels, probs, class_names)
    with atomic_write(out / "classification_report.csv") as tmp:
        table.to_csv(tmp, index_label="class")
    with atomic_write(out / "classification_report.md") as tmp:
        tmp.write_text(table_markdown(table) + "\n")
    with atomic_write(out / "confusion_matrix.png") as tmp:
        plot_confusion(values["confusion"].cpu(), class_names, tmp, title=prefix)
    predictions = pd.DataFrame({"index": index.numpy(), "true": labels.numpy(), "predicted": probs.argmax(1).numpy()})
    for i, name in enumerate(class_names):
        predictions[f"p_{name}"] = probs[:, i].numpy()
    with atomic_write(out / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False, float_format="%.6f")
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return table
