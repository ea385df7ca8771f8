"""Callbacks that belong to the product rather than to Lightning."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

from fer_lightning.report import table_markdown, write_report

log = logging.getLogger("fer_lightning")


def gather_concat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor of any length from every DDP rank (all_gather needs equal lengths)."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    parts: list[torch.Tensor | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


class TestReport(L.Callback):
    """Collects every test prediction and writes the report (see ``write_report``) into ``output_dir``."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self._outputs: list[dict[str, torch.Tensor]] = []
        self.table = None

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._outputs = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._outputs.append({k: v.detach().cpu() for k, v in outputs.items()})

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        labels, probs, index = (
            gather_concat(torch.cat([o[k] for o in self._outputs])) for k in ("labels", "probs", "index")
        )
        self._outputs = []
        if not trainer.is_global_zero:
            return
        order = index.argsort()
        ckpt = getattr(trainer, "ckpt_path", None)
        self.table = write_report(
            self.output_dir,
            labels[order],
            probs[order],
            index[order],
            pl_module.class_names,
            extra={"ckpt_path": str(ckpt) if ckpt else None, "epoch": trainer.current_epoch},
        )
        log.info("test report written to %s\n%s", self.output_dir, table_markdown(self.table))
