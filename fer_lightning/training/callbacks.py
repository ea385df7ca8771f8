"""Callbacks that belong to the product rather than to Lightning."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from torch.optim.swa_utils import update_bn

from fer_lightning.evaluation.metrics import per_source_scores
from fer_lightning.evaluation.report import table_markdown, write_report
from fer_lightning.training.schedules import training_progress

log = logging.getLogger("fer_lightning")


def gather_concat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor of any length from every DDP rank (all_gather needs equal lengths)."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    parts: list[torch.Tensor | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def tested_weights(trainer: L.Trainer, ckpt: str | None) -> dict[str, Any]:
    """Which weights a test scored, for metrics.json: the checkpoint, its epoch, whether they are averaged, and
    the precision it ran in.

    The epoch is counted as in the checkpoint names (``epoch_001.ckpt``: 1). After ``fit``,
    ``trainer.current_epoch`` is the number of epochs run, one past the last epoch's index, and testing a
    checkpoint does not change it: the epoch is read from the checkpoint itself (memory-mapped). A checkpoint
    saved under a weight-averaging callback holds the average as its ``state_dict`` (the live weights sit
    beside it); without a checkpoint, the module holds the average when such a callback copied it in at the
    end of training.
    """
    if ckpt:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        epoch = checkpoint.get("epoch")
        averaged = "averaging_state" in checkpoint
    else:
        epoch = trainer.current_epoch - 1 if trainer.current_epoch > 0 else None
        averaged = any(isinstance(c, WeightAveraging) for c in trainer.callbacks)
    return {
        "ckpt_path": str(ckpt) if ckpt else None,
        "epoch": int(epoch) if epoch is not None else None,
        "averaged_weights": averaged,
        "precision": trainer.precision,
    }


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that, resumed into a new run dir, remembers the earlier run's best score and file.

    Lightning forgets them when the checkpoint's ``dirpath`` differs (it warns so), and the resumed run would then
    call its first epoch "best" and test a worse model than an uninterrupted run would. The earlier run's files
    are only read: Lightning never deletes a checkpoint outside ``dirpath``. The state key is plain
    ``ModelCheckpoint``'s, so checkpoints of either class resume with either.
    """

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        best_k = {path: score for path, score in state_dict.get("best_k_models", {}).items() if Path(path).is_file()}
        if self.best_model_path not in best_k:  # the earlier run's best file is gone: Lightning's behaviour
            return
        self.best_k_models = best_k
        self.best_model_score = state_dict["best_model_score"]
        self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
        self.kth_value = state_dict.get("kth_value", self.kth_value)


class ProgressiveResizing(L.Callback):
    """Train on smaller faces early and on full-size ones at the end, for more epochs in the same time.

    The side grows linearly from ``min_side`` at ``start`` to ``max_side`` at ``end`` (fractions of training, by
    steps or, under ``trainer.max_time``, by time, as the LR schedule counts them), rounded down to a multiple of
    ``multiple``, and holds per epoch. Early epochs learn coarse features that need no fine detail, and the
    full-size epochs at the end, with the learning rate already low, adapt the network, BatchNorm statistics
    included, to the size it is evaluated at (FFCV's ResNet recipes; Touvron et al., "Fixing the train-test
    resolution discrepancy", 2019). The multiple of 8 keeps each step of the ramp worth taking: the compact
    network halves the map four times, and 44 px, say, still ends at the 3x3 map of 48 px. In ``cpu_speedrun``
    (fp32, 2 CPU cores) an epoch took 14-15 s at 32 px, 20-22 s at 40 px and 23-24 s at 48 px.

    Validation always sees full-size faces. While the training side is smaller, the network being validated
    (the EMA weights, where a weight-averaging callback swapped them in) would be scored at 48 px with BatchNorm
    statistics gathered at the training side, which mis-scales every layer: its val/acc then says little about the
    weights, and early stopping, the best checkpoint and a sweep's pruner read it. So, during the ramp, before each
    validation the BatchNorm statistics of the validated weights are recomputed at the evaluation size from
    ``recalibrate_batches`` training batches without augmentation (FixRes; ``torch.optim.swa_utils.update_bn``),
    the same faces on every DDP rank. Only BatchNorm's running statistics change, never a trained weight; a
    checkpoint saved after that validation holds them, so ``evaluate`` on it gives the logged figure. Once the
    training side is the full side, nothing is recomputed. ``recalibrate_batches=0`` turns it off.

    Use it::

        callbacks:
          progressive_resizing:
            _target_: fer_lightning.training.callbacks.ProgressiveResizing
            min_side: 32
            start: 0.25
            end: 0.65
    """

    def __init__(
        self,
        min_side: int = 32,
        max_side: int = 48,
        start: float = 0.25,
        end: float = 0.65,
        multiple: int = 8,
        recalibrate_batches: int = 20,
    ) -> None:
        if not 0 < min_side <= max_side or multiple < 1:
            raise ValueError(
                f"progressive resizing needs 0 < min_side <= max_side and multiple >= 1, got min_side={min_side}, "
                f"max_side={max_side}, multiple={multiple}"
            )
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"progressive resizing needs 0 <= start <= end <= 1, got start={start}, end={end}")
        if recalibrate_batches < 0:
            raise ValueError(f"progressive resizing needs recalibrate_batches >= 0, got {recalibrate_batches}")
        self.min_side, self.max_side, self.start, self.end, self.multiple = min_side, max_side, start, end, multiple
        self.recalibrate_batches = recalibrate_batches

    def side_at(self, progress: float) -> int:
        """The training side at ``progress`` (0..1) through training."""
        ramp = min(1.0, max(0.0, (progress - self.start) / max(1e-9, self.end - self.start)))
        side = self.min_side + ramp * (self.max_side - self.min_side)
        return max(self.min_side, int(side) // self.multiple * self.multiple)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(trainer.datamodule, "train_side"):
            raise TypeError(
                f"callbacks.progressive_resizing needs a data module with a train_side attribute "
                f"(FERDataModule), got {type(trainer.datamodule).__name__}"
            )
        # A network with a dense layer on the flattened map (cnn3, vgg, logreg) takes one size only: say so
        # now rather than with a matrix shape error at the first step. Eager, so that a compiled network is
        # not compiled once more for this probe's shape.
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad(), torch.compiler.set_stance("force_eager"):
                pl_module(torch.zeros(2, 1, self.min_side, self.min_side, device=pl_module.device))
        except RuntimeError as error:
            raise ValueError(
                f"callbacks.progressive_resizing: the model does not take {self.min_side} px faces ({error}); "
                "use one that pools globally, such as model=compact or model=resnet18"
            ) from error
        finally:
            pl_module.train(was_training)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        side = self.side_at(training_progress(trainer))
        trainer.datamodule.train_side = side
        pl_module.log("train/side", float(side), on_step=False, on_epoch=True)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        # At the first batch rather than at on_validation_epoch_start, so that it runs after a weight-averaging
        # callback's swap at that hook whatever the order of the callbacks.
        side = trainer.datamodule.train_side
        if (
            batch_idx == 0
            and dataloader_idx == 0
            and self.recalibrate_batches > 0
            and trainer.state.fn == "fit"
            and not trainer.sanity_checking
            and side is not None
            and side < batch[0].shape[-1]
        ):
            self.recalibrate_batchnorm(trainer, pl_module)

    def recalibrate_batchnorm(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Recompute ``pl_module``'s BatchNorm statistics on full-size, unaugmented training faces."""
        datamodule = trainer.datamodule
        train = datamodule.splits["train"]
        # Seeded by the epoch alone: the same faces on every rank, and again on a resumed run.
        generator = torch.Generator().manual_seed(trainer.current_epoch)
        count = min(len(train), self.recalibrate_batches * datamodule.batch_size)
        chosen = torch.randperm(len(train), generator=generator)[:count]
        batches = []
        for index in chosen.split(datamodule.batch_size):
            images = train.images[index].to(pl_module.device)
            # The evaluation preprocessing (trainer.training is False here): the faces as validation sees them.
            batches.append(datamodule.on_after_batch_transfer((images, train.labels[index], index), 0)[0])
        # update_bn runs the network in train mode: dropout draws from the global generator, which training goes
        # on drawing from, so it is forked to leave the training run exactly as it would be without this.
        cuda = [pl_module.device.index or 0] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), trainer.precision_plugin.forward_context():
            update_bn(batches, pl_module)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: the run stops instead of training on garbage."""


class StopOnNonFiniteLoss(L.Callback):
    """Stops training with ``TrainingDiverged`` at the ``max_bad_steps``-th NaN or infinite training loss, and
    before any validation (so before any checkpoint) once the weights themselves are no longer finite.

    The run then ends as ``failed`` with this reason (status.json, the leaderboard), a sweeper gets NaN and a
    single run exits non-zero. Under DDP every rank stops together: the check is reduced over the ranks.

    On an accelerator a step's loss is read one step later, when the device has computed it anyway, so the
    check never makes the host wait for the device (the stop comes one step later; the step it names is right).
    """

    def __init__(self, max_bad_steps: int = 1, read_later: bool | None = None) -> None:
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
        self.max_bad_steps = max_bad_steps
        self.read_later = read_later  # None: on an accelerator only
        self.bad_steps = 0
        self.first_bad: str | None = None
        self._pending: tuple[torch.Tensor, str] | None = None  # (loss, where) not read yet

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        where = f"epoch {trainer.current_epoch}, batch {batch_idx} (step {trainer.global_step})"
        previous, self._pending = self._pending, (loss.detach(), where)
        if not (loss.device.type != "cpu" if self.read_later is None else self.read_later):
            self._read_pending(trainer)
        elif previous is not None:
            self._check_loss(trainer, *previous)

    def _read_pending(self, trainer) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._check_loss(trainer, *pending)

    def _check_loss(self, trainer, loss: torch.Tensor, where: str) -> None:
        bad = trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss).all()), all=False)
        if not bad:
            return
        self.bad_steps += 1
        if self.first_bad is None:
            self.first_bad = f"train/loss was {loss.float().mean().item()} at {where}"
        if self.bad_steps >= self.max_bad_steps:
            what = "the first non-finite loss" if self.bad_steps == 1 else f"{self.bad_steps} non-finite losses"
            raise TrainingDiverged(self._message(what))

    def _check_weights(self, trainer, pl_module) -> None:
        if trainer.state.fn != "fit":
            return
        self._read_pending(trainer)
        if self.bad_steps == 0:
            return
        finite = all(bool(torch.isfinite(p).all()) for p in pl_module.parameters())
        if trainer.strategy.reduce_boolean_decision(not finite, all=False):
            raise TrainingDiverged(self._message("the weights are no longer finite"))

    def on_validation_start(self, trainer, pl_module) -> None:
        self._check_weights(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check_weights(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._read_pending(trainer)

    def _message(self, what: str) -> str:
        return (
            f"training diverged: {self.first_bad}; stopped after {what}. Lower optimizer.lr (or raise "
            f"callbacks.nonfinite_loss.max_bad_steps to tolerate isolated bad steps)"
        )


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
        labels, probs, index = labels[order], probs[order], index[order]
        extra = tested_weights(trainer, getattr(trainer, "ckpt_path", None))
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and datamodule.source_names:  # data=mixed: each member's own figures too
            origins = datamodule.splits["test"].origins.cpu()[index]
            extra.update(per_source_scores(labels, probs, origins, datamodule.source_names, "test"))
        self.table = write_report(self.output_dir, labels, probs, index, pl_module.class_names, extra=extra)
        log.info("test report written to %s\n%s", self.output_dir, table_markdown(self.table))
