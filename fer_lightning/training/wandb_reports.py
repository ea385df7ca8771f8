"""What W&B shows beyond the scalar curves: confusion matrices, per-class scores and faces with their predictions.

The per-class precision / recall / F1 scalars need nothing here: the module logs them with ``self.log``, which
reaches every logger. ``logger=wandb`` adds this callback next to the WandbLogger; it does nothing when no
WandbLogger is active (``logger.wandb=null``), so it never fails a run that does not use W&B.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from fer_lightning.evaluation.metrics import PER_CLASS
from fer_lightning.evaluation.report import plot_confusion


def active_wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)


def confusion_rows(confusion: torch.Tensor, class_names: Sequence[str]) -> list[list[Any]]:
    """(actual, predicted, count) rows: the table W&B's confusion-matrix chart is drawn from."""
    return [
        [class_names[i], class_names[j], int(confusion[i, j])]
        for i in range(len(class_names))
        for j in range(len(class_names))
    ]


class WandbReports(L.Callback):
    """Logs to the active WandbLogger's run, on rank 0, at the trainer's global step (the runs' x axis):

    * ``val/confusion_matrix``: counts and row-normalised image after every validation epoch (a step slider in W&B);
    * ``test/confusion_matrix`` (image) and ``test/confusion_chart`` (interactive W&B chart) after testing;
    * ``test/per_class``: precision / recall / F1 per class as a table;
    * ``test/predictions``: the first ``num_predictions`` test faces with true and predicted class and confidence.
    """

    def __init__(self, num_predictions: int = 64, val_confusion_every_n_epochs: int = 1) -> None:
        self.num_predictions = num_predictions
        self.val_confusion_every_n_epochs = val_confusion_every_n_epochs
        self._rows: list[list[Any]] = []

    # ---- validation ------------------------------------------------------------------------
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the module's on_validation_epoch_end, which computed this epoch's confusion matrix.
        logger = active_wandb_logger(trainer)
        confusion = getattr(pl_module, "confusion", {}).get("val")
        every = max(1, self.val_confusion_every_n_epochs)
        if logger is None or confusion is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % every == 0:
            self._log_confusion_image(logger, "val", confusion, pl_module.class_names, trainer)

    # ---- test ------------------------------------------------------------------------------
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dl_idx=0
    ) -> None:
        room = self.num_predictions - len(self._rows)
        if room <= 0 or not trainer.is_global_zero or active_wandb_logger(trainer) is None:
            return
        import wandb

        images = batch[0][:room].detach().clamp(0, 255).to(torch.uint8).cpu()
        probs = outputs["probs"][:room].detach().float().cpu()
        confidence, predicted = probs.max(1)
        names = pl_module.class_names
        for image, label, index, pred, conf in zip(
            images, outputs["labels"][:room].tolist(), outputs["index"][:room].tolist(), predicted.tolist(), confidence
        ):
            face = wandb.Image(image[0].numpy(), caption=f"{names[label]} -> {names[pred]}")
            self._rows.append([index, face, names[label], names[pred], round(float(conf), 4), label == pred])

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = active_wandb_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        import wandb

        names = list(pl_module.class_names)
        step = trainer.global_step
        if self._rows:
            columns = ["index", "face", "true", "predicted", "confidence", "correct"]
            logger.log_table("test/predictions", columns=columns, data=self._rows, step=step)
            self._rows = []
        metrics = trainer.callback_metrics
        per_class = [
            [name, *(float(metrics.get(f"test/{score}/{name}", float("nan"))) for score in PER_CLASS)] for name in names
        ]
        logger.log_table("test/per_class", columns=["class", *PER_CLASS], data=per_class, step=step)
        confusion = getattr(pl_module, "confusion", {}).get("test")
        if confusion is None:
            return
        self._log_confusion_image(logger, "test", confusion, names, trainer)
        table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=confusion_rows(confusion, names))
        chart = wandb.plot_table(
            "wandb/confusion_matrix/v1",
            table,
            {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            {"title": "test confusion matrix"},
        )
        logger.experiment.log({"test/confusion_chart": chart, "trainer/global_step": step})

    # ---- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _log_confusion_image(
        logger: WandbLogger, stage: str, confusion: torch.Tensor, class_names: Sequence[str], trainer: L.Trainer
    ) -> None:
        import wandb

        epoch = trainer.current_epoch
        with tempfile.TemporaryDirectory() as tmp:  # wandb copies the file into the run when it is logged
            path = Path(tmp) / f"{stage}_confusion.png"
            plot_confusion(confusion, class_names, path, title=f"{stage} epoch {epoch}")
            image = wandb.Image(str(path), caption=f"{stage} epoch {epoch}")
            logger.log_metrics({f"{stage}/confusion_matrix": image}, step=trainer.global_step)
