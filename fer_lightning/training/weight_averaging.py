"""Weight averaging whose validation and test after ``fit`` score exactly the weights a checkpoint holds.

Lightning's ``WeightAveraging`` callbacks (``EMAWeightAveraging``) save the averaged weights as a checkpoint's
``state_dict`` and the live ones as ``current_model_state``. Their ``on_load_checkpoint`` puts the live weights
back into the module, which resuming a fit needs. But the averaged model built for ``fit`` outlives it, so the
same hook also ran for ``trainer.test(ckpt_path=best)`` in the process that trained, and the run recorded the
test score of the live weights at that epoch: a figure that belongs to no saved file (issue 40).
Outside ``fit`` these callbacks now stand aside: the module keeps the checkpoint's ``state_dict``,
which is what ``evaluate``, the export and deployment use.

Use it in place of Lightning's (``conf/callbacks/ema.yaml``)::

    ema:
      _target_: fer_lightning.training.weight_averaging.EMAWeightAveraging
      decay: 0.999
      update_starting_at_step: 100
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA
from lightning.pytorch.callbacks import WeightAveraging


class FitOnlyAveraging(WeightAveraging):
    """A ``WeightAveraging`` that averages and swaps weights while fitting, and leaves them alone otherwise."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            # After fit, on_train_end has copied the average into the module, and a checkpoint's state_dict is its
            # average: the stale averaged model must neither swap in at validation nor restore live weights.
            self._average_model = None
            return
        super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is not None:  # fitting (see setup): restore the averaged model and the live weights
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class EMAWeightAveraging(FitOnlyAveraging, LightningEMA):
    """Lightning's exponential moving average of the weights, evaluated as saved (see the module docstring)."""
