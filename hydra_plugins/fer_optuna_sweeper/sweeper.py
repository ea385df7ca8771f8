"""The plugin class Hydra finds (``hydra/sweeper=fer_optuna``); the work and the optuna import are in ``_impl``.

Hydra imports every public module under ``hydra_plugins`` on each start to discover plugins, and skips the
ones named ``_*``: so a plain ``python train.py`` does not pay for importing optuna and SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Takes the fields of ``config.OptunaSweeperConf``."""

    def __init__(self, **config: Any) -> None:
        from ._impl import OptunaSweeperImpl

        self.impl = OptunaSweeperImpl(**config)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
