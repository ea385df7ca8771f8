"""The LightningModule: training logic for any classifier ``nn.Module`` that returns logits."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2

from fer_lightning.evaluation.metrics import classification_metrics, flatten_metrics
from fer_lightning.labels import EMOTIONS, IMAGE_SIZE
from fer_lightning.training.sam import SAM
from fer_lightning.training.schedules import training_progress
from fer_lightning.training.soft_targets import SoftTargets, distilled_targets

log = logging.getLogger("fer_lightning.training")


def _plain(config: Any) -> Any:
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config


def _with_classes(net: Mapping, num_classes: int) -> dict:
    """The head follows the dataset's class list (7 for FER-2013, 8 for FER+), whatever the model config says."""
    return {**net, "num_classes": num_classes} if "num_classes" in net else dict(net)


class FERClassifier(L.LightningModule):
    """Cross-entropy training of ``net`` with per-class metrics for every stage.

    ``net``, ``optimizer`` and ``scheduler`` arrive as Hydra configs and are stored as plain dicts
    in the hyperparameters, so a checkpoint rebuilds its model with ``load_from_checkpoint`` and
    holds no pickled objects (it loads with ``weights_only=True``).

    ``scheduler`` is ``{builder: <partial scheduler config>, interval: epoch|step, monitor: ...}``;
    step-interval builders get ``total_steps``. ``class_weights`` is a list or ``"balanced"``
    (inverse class frequency of the training split, for the 436-image disgust class).

    ``self_distillation`` is PS-KD's final weight (progressive self-knowledge distillation, Kim et al., ICCV
    2021): at epoch t the target of a face is ``(1 - a) one-hot + a p``, where p is what the network itself
    predicted for that face in the epoch before and ``a = self_distillation * t / max_epochs``. FER-2013's
    labels are noisy, and late in training the network starts to learn the wrong ones by heart; its own
    earlier predictions soften most the labels it finds implausible, where label smoothing softens all
    of them alike. It costs no extra forward pass: the predictions are the training step's own.
    """

    def __init__(
        self,
        net: Mapping,
        optimizer: Mapping,
        scheduler: Mapping | None = None,
        label_smoothing: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        channels_last: bool = True,
        compile: bool = False,
        class_names: Sequence[str] = EMOTIONS,
        input_size: int | None = None,
        self_distillation: float = 0.0,
        distill: Mapping | None = None,
    ) -> None:
        super().__init__()
        distill = {"alpha": 0.5, "temperature": 1.0, **(_plain(distill) or {})}
        if not distill.get("targets"):
            distill = {}
        else:
            if not 0.0 <= distill["alpha"] <= 1.0 or distill["temperature"] <= 0:
                raise ValueError(f"module.distill needs alpha in [0, 1] and temperature > 0, got {distill}")
            if self_distillation:
                raise ValueError("module.distill and module.self_distillation are two teachers: choose one")
        if not 0.0 <= self_distillation <= 1.0:
            raise ValueError(f"module.self_distillation is a weight in [0, 1], got {self_distillation}")
        if self_distillation and (mixup_alpha or cutmix_alpha):
            raise ValueError("module.self_distillation cannot be combined with mixup or cutmix (mixed faces)")
        self.save_hyperparameters(
            {
                "net": _with_classes(_plain(net), len(class_names)),
                "optimizer": _plain(optimizer),
                "scheduler": _plain(scheduler) or None,
                "label_smoothing": label_smoothing,
                "class_weights": _plain(class_weights),
                "mixup_alpha": mixup_alpha,
                "cutmix_alpha": cutmix_alpha,
                "channels_last": channels_last,
                "compile": compile,
                "class_names": list(class_names),
                # The side of the images it was trained on (a crop size, else 48), for evaluation and export.
                "input_size": input_size or IMAGE_SIZE,
                "self_distillation": self_distillation,
                # Distillation from a teacher table (training/soft_targets.py); the teachers are added in setup.
                "distill": distill or None,
            }
        )
        self.class_names = tuple(class_names)
        self.net: nn.Module = instantiate(self.hparams.net)
        num_classes = len(self.class_names)
        # Pixel-space normalisation lives in the model so checkpoints and exports take raw pixels.
        self.register_buffer("input_mean", torch.tensor(0.0))
        self.register_buffer("input_std", torch.tensor(255.0))
        self.register_buffer("loss_weights", torch.ones(num_classes))
        self.mix = self._mixer(num_classes, mixup_alpha, cutmix_alpha)
        self.multi_target = False  # FER+ multi_target mode: set from the datamodule in setup
        # Self-distillation: the last prediction for every training face (zeros until it is first seen).
        # Not a buffer: it belongs to the training run, not to the model, so it travels in checkpoints
        # beside the state_dict and never into an exported or deployed model.
        self.past_probs: torch.Tensor | None = None
        # Distillation: the teachers' probabilities for every training face (from module.distill.targets); not a
        # buffer either: reread from its file on resume, never exported.
        self.teacher_probs: torch.Tensor | None = None
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_metrics = classification_metrics(num_classes)
        self.test_metrics = classification_metrics(num_classes)
        self.confusion: dict[str, torch.Tensor] = {}
        # data=mixed: accuracy per member for val and test (set up from the datamodule in setup)
        self.source_names: tuple[str, ...] = ()
        self.source_acc = nn.ModuleDict()
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()  # in place: state_dict keys stay those of the plain model

    @staticmethod
    def _mixer(num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> v2.Transform | None:
        choices = [v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []
        choices += [v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else []
        return v2.RandomChoice(choices) if choices else None

    # ---- setup -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "source_names", ()) and not self.source_names:
            self.source_names = datamodule.source_names
            for role in ("val", "test"):
                for i in range(len(self.source_names)):
                    self.source_acc[f"{role}_{i}"] = MulticlassAccuracy(len(self.class_names), average="micro")
        if stage != "fit" or datamodule is None:
            return
        # The side the network sees: the training crop, else the data's faces (data.source.image_size).
        train = getattr(datamodule, "splits", {}).get("train")
        if train is not None:
            crop = getattr(getattr(datamodule, "augment", None), "crop_size", None)
            self.hparams["input_size"] = crop or int(train.images.shape[-1])
        mean, std = datamodule.input_mean_std
        self.input_mean.fill_(mean)
        self.input_std.fill_(std)
        self.multi_target = datamodule.label_mode == "multi_target"
        weights = self.hparams.class_weights
        if weights == "balanced":
            counts = datamodule.class_counts.float().clamp(min=1)
            self.loss_weights.copy_(counts.sum() / (len(counts) * counts))
        elif weights is not None:
            self.loss_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))
        if self.hparams.self_distillation:
            if datamodule.label_mode != "majority":
                raise ValueError(
                    f"module.self_distillation needs hard labels, but the data gives {datamodule.label_mode!r} targets"
                )
            if not self.trainer.max_epochs or self.trainer.max_epochs < 1:
                raise ValueError("module.self_distillation ramps up over trainer.max_epochs: set it")
            faces = len(datamodule.splits["train"])
            self.past_probs = torch.zeros(faces, len(self.class_names), device=self.device)
        distill = self.hparams.get("distill") or {}
        if distill.get("targets"):
            if self.multi_target:
                raise ValueError("module.distill mixes targets, which FER+'s multi_target loss does not take")
            table = SoftTargets.load(distill["targets"])
            table.check(distill["targets"], datamodule.splits["train"], self.class_names)
            self.teacher_probs = table.probs
            self.hparams["distill"] = {**distill, "teachers": list(table.teachers), "tta": table.tta}

    def on_fit_start(self) -> None:
        # setup ran before the strategy moved the model to its device; the batches (and their indices) are there.
        if self.past_probs is not None:
            self.past_probs = self.past_probs.to(self.device)
        if self.teacher_probs is not None:
            self.teacher_probs = self.teacher_probs.to(self.device)

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for pixel values 0..255 shaped (N, 1, H, W)."""
        x = (images - self.input_mean) / self.input_std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), targets, weight=self.loss_weights, label_smoothing=self.hparams.label_smoothing
        )

    def _multi_target_loss(self, logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """FER+ multi-target loss (Barsoum et al.; Microsoft's reference): -log max_k t_k p_k, class-weighted."""
        loss = -(targets.log() + logits.float().log_softmax(-1)).amax(-1)
        weight = self.loss_weights[labels]
        return (loss * weight).sum() / weight.sum()

    def _self_distilled_targets(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """PS-KD targets from the previous epoch's predictions; records this step's for the next epoch."""
        one_hot = F.one_hot(labels, len(self.class_names)).float()
        past = self.past_probs[index]
        past = torch.where(past.sum(-1, keepdim=True) > 0, past, one_hot)  # never predicted yet: the label
        probs = logits.detach().float().softmax(-1)
        if self.trainer.world_size > 1:  # every rank keeps every face's prediction: shards change per epoch
            index, probs = self.all_gather(index).flatten(), self.all_gather(probs).flatten(0, 1)
        self.past_probs[index] = probs
        weight = self.hparams.self_distillation * self.current_epoch / self.trainer.max_epochs
        return (1 - weight) * one_hot + weight * past

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Dropout, mixup and cutmix draw from torch's global generator, which a checkpoint does not hold: seeded
        # from (seed, step, rank) at every step, they draw the same on a resumed run as on one that never stopped.
        seed = getattr(getattr(self.trainer, "datamodule", None), "seed", 0) or 0
        torch.manual_seed(hash((seed, self.global_step, self.global_rank)) & 0x7FFF_FFFF_FFFF)
        optimizer = self.optimizers(use_pl_optimizer=False)
        if isinstance(optimizer, SAM) and not optimizer.active:  # start=0: active from the first step
            # Under DDP every rank must take the same number of backward passes, so all switch together when the
            # first rank's clock gets there: an all-reduce of one integer, cheap enough to do at every step.
            optimizer.active = self.trainer.strategy.reduce_boolean_decision(
                training_progress(self.trainer) >= optimizer.start, all=False
            )
            if optimizer.active:
                log.info("SAM takes over at step %d (epoch %d)", self.global_step, self.current_epoch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels, index, *soft = batch  # soft: FER+ vote-distribution targets (N, C), else class indices
        targets = soft[0] if soft else labels
        if self.teacher_probs is not None:
            hard = targets if soft else F.one_hot(labels, len(self.class_names)).float()
            distill = self.hparams.distill
            targets = distilled_targets(hard, self.teacher_probs[index], distill["alpha"], distill["temperature"])
            soft = [targets]
        if self.mix is not None and soft:
            # Mix the soft targets with the images' own mixing weights: one-hot sample indices in, weights out.
            n = len(labels)
            mixer = self._mixer(n, self.hparams.mixup_alpha, self.hparams.cutmix_alpha)
            images, mixing = mixer(images, torch.arange(n, device=labels.device))
            targets = mixing.to(targets.dtype) @ targets
        elif self.mix is not None:
            images, targets = self.mix(images, labels)
        logits = self(images)
        if self.past_probs is not None:
            targets = self._self_distilled_targets(logits, labels, index)
        if soft and self.multi_target:
            loss = self._multi_target_loss(logits, targets, labels)
        else:
            loss = self._loss(logits, targets)
        self.train_acc.update(logits, labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.past_probs is not None:
            checkpoint["self_distillation_probs"] = self.past_probs.cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("self_distillation_probs")
        if saved is None or self.past_probs is None:  # not resuming a self-distilled run's training
            return
        if saved.shape != self.past_probs.shape:
            raise ValueError(
                f"the checkpoint holds self-distillation predictions for {tuple(saved.shape)} faces x classes, "
                f"but the training data has {tuple(self.past_probs.shape)}: resume on the data it was trained on"
            )
        self.past_probs.copy_(saved)

    def on_train_epoch_end(self) -> None:
        # Logged once here: a Metric passed to self.log at every step is moved to the value's device (a
        # module traversal) by Lightning at every step.
        self.log("train/acc", self.train_acc.compute(), sync_dist=True, reduce_fx="max")
        self.train_acc.reset()

    def _eval_step(self, batch, stage: str) -> dict[str, torch.Tensor]:
        images, labels, index = batch
        logits = self(images).float()
        self.log(f"{stage}/loss", self._loss(logits, labels), on_epoch=True, sync_dist=True, batch_size=len(labels))
        getattr(self, f"{stage}_metrics").update(logits, labels)
        if self.source_names:
            origins = self.trainer.datamodule.splits[stage].origins
            origins = origins[index.to(origins.device)].to(labels.device)
            for i in range(len(self.source_names)):
                mask = origins == i
                if mask.any():
                    self.source_acc[f"{stage}_{i}"].update(logits[mask], labels[mask])
        return {"probs": logits.softmax(-1), "labels": labels, "index": index}

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        # compute() syncs the states of every DDP rank, so each rank logs the same global values.
        # sync_dist only tells Lightning so (else it warns once per metric under DDP); the max of equal
        # values is exact, where a mean over 3 ranks could round.
        collection = getattr(self, f"{stage}_metrics")
        values = collection.compute()
        collection.reset()
        self.confusion[stage] = values["confusion"].cpu()
        for name, value in flatten_metrics(values, self.class_names, stage).items():
            self.log(
                name, value, prog_bar=name in (f"{stage}/acc", f"{stage}/f1_macro"), sync_dist=True, reduce_fx="max"
            )
        for i, member in enumerate(self.source_names):
            metric = self.source_acc[f"{stage}_{i}"]
            if metric.update_called:
                self.log(f"{stage}/acc/{member}", metric.compute(), sync_dist=True, reduce_fx="max")
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        config = self.hparams.scheduler
        if not config:
            return optimizer
        interval = config.get("interval", "epoch")
        extra = {"total_steps": int(self.trainer.estimated_stepping_batches)} if interval == "step" else {}
        scheduler = instantiate(config["builder"])(optimizer, **extra)
        lr_scheduler = {"scheduler": scheduler, "interval": interval}
        if config.get("monitor"):
            lr_scheduler["monitor"] = config["monitor"]
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}
