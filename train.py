"""Train, validate and test a FER model: ``python train.py model=cnn3 optimizer=adam``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fer_lightning.pipeline import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # Sweepers (Optuna, ...) optimise the value returned here.
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
