"""What ``train.py`` does, as a function the tests call with composed configs."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import fer_lightning.config  # noqa: F401  (registers the resolvers the configs use)
import fer_lightning.runs  # noqa: F401  (registers ${sweep_name:}, the W&B group of a multirun)
from fer_lightning.data.datamodule import FERDataModule
from fer_lightning.module import FERClassifier

log = logging.getLogger("fer_lightning")


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Callbacks and loggers are dicts of named configs, so an override can drop one by name (``=null``)."""
    return [instantiate(config) for config in (group or {}).values() if config and "_target_" in config]


def _refuse_to_overwrite(output_dir: Path) -> None:
    """A run, resumed or not, writes a directory of its own: Lightning's CSV logger deletes an existing metrics.csv."""
    earlier = [output_dir / name for name in ("checkpoints", "metrics.csv", "metrics.json")]
    if rank_zero_only.rank == 0 and any(p.exists() for p in earlier):
        raise FileExistsError(
            f"{output_dir} already holds an earlier run; give this run a new hydra.run.dir "
            "(to resume, pass ckpt_path=<old run>/checkpoints/last.ckpt from a new directory)"
        )


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


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns every metric logged (val and test)."""
    output_dir = Path(cfg.paths.output_dir)
    _refuse_to_overwrite(output_dir)
    # The CSV logger warns that it will delete an earlier metrics.csv; the check above means there is none.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build(cfg)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test") and datamodule.has_split("test"):
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
        best = checkpoint.best_model_path if checkpoint else ""
        if not best:
            log.warning("no best checkpoint was saved: testing the weights as they are now")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    elif cfg.get("test"):
        log.warning("testing skipped: the data has no test split (see the warning above)")
    log.info("outputs in %s", output_dir.resolve())
    return metrics
