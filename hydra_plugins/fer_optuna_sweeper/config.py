"""Config schema of the ``fer_optuna`` sweeper: hydra-optuna-sweeper 1.3's fields, so a config works with either.

Samplers are ``_partial_``: the sweeper gives them their seed, shifted by the number of trials already in a
resumed study, so a seeded sampler does not propose the first invocation's startup trials again.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConfig:
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.TPESampler.html"""

    _target_: str = "optuna.samplers.TPESampler"
    _partial_: bool = True
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    constant_liar: bool = False  # with n_jobs > 1: do not propose what a running trial already tries


@dataclass
class RandomSamplerConfig:
    _target_: str = "optuna.samplers.RandomSampler"
    _partial_: bool = True
    seed: int | None = None


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.fer_optuna_sweeper.sweeper.OptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    # minimize | maximize (one objective: the value train.py returns)
    direction: str = "minimize"
    # e.g. sqlite:///logs/optuna/study.db; the study continues when it exists (load_if_exists). None: in memory.
    storage: str | None = None
    study_name: str | None = None
    # Trials this invocation runs; a resumed study adds them to those it has.
    n_trials: int = 20
    # Trials launched together (in parallel with a parallel launcher, e.g. hydra/launcher=submitit_slurm).
    n_jobs: int = 1
    # Stop (raise) once more than this fraction of this invocation's trials failed, judged from the 3rd trial on.
    max_failure_rate: float = 0.0
    # {config key: Hydra override syntax}: interval(a, b), tag(log, interval(a, b)), tag(int, interval(a, b)),
    # choice(a, b), range(a, b, s) or a fixed value. A key the composed config lacks (model.dropout of
    # model=logreg) is left out with a warning; +key adds one.
    params: dict[str, str] | None = None


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="fer_optuna", node=OptunaSweeperConf, provider="fer_lightning")
_store.store(group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConfig, provider="fer_lightning")
_store.store(group="hydra/sweeper/sampler", name="random", node=RandomSamplerConfig, provider="fer_lightning")
