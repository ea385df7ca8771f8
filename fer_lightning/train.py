"""Train, validate and test a FER model: ``python train.py model=cnn3 optimizer=adam``.

``main`` is the Hydra command; ``train`` does the work, as a function the tests call with composed configs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import MixedPrecision, Precision
from omegaconf import DictConfig, OmegaConf

from fer_lightning import resolvers
from fer_lightning.atomic import atomic_write
from fer_lightning.cli_errors import short_errors
from fer_lightning.conf import CONF_DIR
from fer_lightning.data.datamodule import FERDataModule
from fer_lightning.training.module import FERClassifier
from fer_lightning.training.run_status import run_recorded

log = logging.getLogger("fer_lightning")


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Callbacks and loggers are dicts of named configs, so an override can drop one by name (``=null``)."""
    return [instantiate(config) for config in (group or {}).values() if config and "_target_" in config]


def build(cfg: DictConfig) -> tuple[FERDataModule, FERClassifier, L.Trainer]:
    datamodule: FERDataModule = instantiate(cfg.data)
    module: FERClassifier = instantiate(
        cfg.module,
        net=cfg.model,
        optimizer=cfg.optimizer,
        scheduler=cfg.get("scheduler"),
        class_names=list(datamodule.class_names),
        _recursive_=False,
    )
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=_instantiate_all(cfg.get("callbacks")),
        logger=_instantiate_all(cfg.get("logger")) or False,
    )
    return datamodule, module, trainer


@contextmanager
def scored_in_fp32(trainer: L.Trainer) -> Iterator[None]:
    """Test without mixed-precision autocast, as ``evaluate`` and the exported models score a checkpoint.

    Under bf16 autocast (the default on AMX CPUs and bf16 GPUs) probabilities move in the third or fourth decimal
    and faces near a decision boundary change class: the recorded figure would then belong to no way of running
    the file. Runs whose weights are themselves in low precision (``bf16-true``) keep their plugin.
    """
    plugin = trainer.strategy.precision_plugin
    if isinstance(plugin, MixedPrecision):
        trainer.strategy.precision_plugin = Precision()
    try:
        yield
    finally:
        trainer.strategy.precision_plugin = plugin


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns every metric logged (val and test)."""
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build(cfg)
    if trainer.is_global_zero:
        with atomic_write(output_dir / "config.yaml") as tmp:
            tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    with warnings.catch_warnings():
        # The CSV logger warns that the run dir is not empty: it holds this run's own config and status files.
        warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
        for logger in trainer.loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test") and datamodule.has_split("test"):
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
        best = checkpoint.best_model_path if checkpoint else ""
        if not best:
            log.warning("no best checkpoint was saved: testing the weights as they are now")
        with scored_in_fp32(trainer):
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    elif cfg.get("test"):
        log.warning("testing skipped: the data has no test split (see the warning above)")
    log.info("outputs in %s", output_dir.resolve())
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    # Sweepers (Optuna, ...) optimise the value returned here; in a multirun a failed job returns NaN and
    # leaves status.json "failed", so the other jobs still run (see fer_lightning/training/run_status.py).
    # A single run's expected errors (bad data, a diverged run) are one line on stderr and exit status 1.
    with short_errors():
        return run_recorded(cfg, train)


def main() -> float | None:
    resolvers.register()
    return _hydra_main()


if __name__ == "__main__":
    main()
