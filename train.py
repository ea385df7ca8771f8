"""Train, validate and test a FER model: ``python train.py model=cnn3 optimizer=adam``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fer_lightning.pipeline import train
from fer_lightning.runs import run_recorded


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Sweepers (Optuna, ...) optimise the value returned here; in a multirun a failed job returns NaN and
    # leaves status.json "failed", so the other jobs still run (see fer_lightning/runs.py).
    return run_recorded(cfg, train)


if __name__ == "__main__":
    main()
