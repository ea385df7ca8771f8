"""Optuna ask-and-tell behind Hydra's Sweeper interface: each batch of asked trials is one launcher call.

Why not hydra-optuna-sweeper 1.3.0: it requires optuna < 3, and what pip resolves for it here (optuna 2.10.1
with SQLAlchemy 2.x) fails to open a SQLite storage; see docs/sweeps.md.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ._storage import opened_storage

log = logging.getLogger(__name__)
MIN_TRIALS_BEFORE_GIVING_UP = 3
_ABSENT = object()


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override: interval, tag(log, interval), range, choice.

    Hydra parses interval bounds as floats, so an integer interval is tagged: ``tag(int, interval(1, 9))``.
    """
    value = override.value()
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log_scale = "log" in value.tags
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    if override.is_range_sweep() and not value.shuffle:
        assert isinstance(value, RangeSweep)
        values = list(override.sweep_iterator())  # Hydra's range excludes stop: the last value it yields is high
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))


def _in_config(config: DictConfig, override: Override) -> bool:
    """A plain ``key=...`` must name an existing key or config group; ``+key`` adds one."""
    if override.is_add() or override.is_force_add():
        return True
    key = override.key_or_group.replace("/", ".")
    return OmegaConf.select(config, key, default=_ABSENT, throw_on_missing=False) is not _ABSENT


def search_space(arguments: Sequence[str], config: DictConfig) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """Sweep overrides become distributions, the others fixed overrides; later arguments win (CLI over config)."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        name = override.get_key_element()
        space.pop(name, None)
        fixed.pop(name, None)
        if not override.is_sweep_override():
            fixed[name] = override.get_value_element_as_str()
        elif _in_config(config, override):
            space[name] = distribution(override)
        else:
            log.warning("%s is not in this config (e.g. a model without it): left out of the search", name)
    return space, fixed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_orphaned_trials(study: optuna.Study) -> int:
    """Trials left RUNNING by an interrupted sweep on this host (its process gone) become FAIL.

    A resumed study otherwise carries them as running forever; trials of a live sweeper sharing the
    storage (another process, another host) are left alone.
    """
    host, count = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("sweeper_pid")
        if trial.user_attrs.get("sweeper_host") == host and pid and not _process_alive(pid):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            count += 1
    if count:
        log.warning("marked %d trial(s) of an interrupted sweep as failed", count)
    return count


def trial_value(job: JobReturn) -> tuple[float | None, str | None]:
    """(value, None) for a usable objective, (None, why) for a failed trial: an exception, None or NaN."""
    try:
        value = job.return_value
    except Exception as error:  # the task raised (train.py only lets that happen outside a multirun)
        return None, f"{type(error).__name__}: {error}"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None, f"returned {value!r}, not a number"
    return (value, None) if math.isfinite(value) else (None, f"returned {value}")


class OptunaSweeperImpl:
    """Asks ``n_jobs`` trials at a time, launches them as Hydra jobs (job number = trial number), tells the results."""

    def __init__(
        self,
        sampler: Any,
        direction: str,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
    ) -> None:
        if str(direction) not in ("minimize", "maximize"):
            raise ValueError(f"direction must be minimize or maximize, not {direction!r} (one objective)")
        self.sampler = sampler
        self.direction = str(direction)
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = max(1, n_jobs)
        self.max_failure_rate = max_failure_rate
        self.params = params or {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def _make_sampler(self, trials_done: int) -> optuna.samplers.BaseSampler:
        if not isinstance(self.sampler, functools.partial):
            return self.sampler
        seed = self.sampler.keywords.get("seed")
        return self.sampler(seed=None if seed is None else seed + trials_done)

    def _study(self, storage: optuna.storages.BaseStorage | None) -> optuna.Study:
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self._make_sampler(0),
            direction=self.direction,
            load_if_exists=True,
        )
        if study.direction.name.lower() != self.direction:
            raise ValueError(f"study {study.study_name!r} in {self.storage} is to {study.direction.name.lower()}")
        if study.trials:
            study.sampler = self._make_sampler(len(study.trials))
        return study

    def sweep(self, arguments: list[str]) -> None:
        with opened_storage(self.storage) as storage:
            self._sweep(arguments, self._study(storage))

    def _sweep(self, arguments: list[str], study: optuna.Study) -> None:
        params = [f"{key}={value}" for key, value in self.params.items()]
        space, fixed = search_space([*params, *arguments], self.config)
        fail_orphaned_trials(study)
        log.info(
            "study %s (%s): %d trials so far, %d to run; searching %s",
            study.study_name,
            self.storage or "in memory",
            len(study.trials),
            self.n_trials,
            ", ".join(space) or "nothing",
        )
        identity = {"sweeper_host": socket.gethostname(), "sweeper_pid": os.getpid()}
        done = failed = 0
        while done < self.n_trials:
            if done:  # a sweeper beside this one may have been killed since: its trial is not running any more
                fail_orphaned_trials(study)
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            for trial in trials:
                for key, value in identity.items():
                    trial.set_user_attr(key, value)
            overrides = [
                [*(f"{k}={v}" for k, v in trial.params.items()), *(f"{k}={v}" for k, v in fixed.items())]
                for trial in trials
            ]
            jobs = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            for trial, job in zip(trials, jobs):
                value, error = trial_value(job)
                output_dir = OmegaConf.select(job.hydra_cfg or {}, "hydra.runtime.output_dir", default=None)
                if output_dir:
                    trial.set_user_attr("output_dir", str(output_dir))
                if error is None:
                    study.tell(trial, value)
                else:
                    trial.set_user_attr("error", error)
                    study.tell(trial, state=TrialState.FAIL)
                    failed += 1
                    log.warning("trial %d failed: %s", trial.number, error)
            done += len(trials)
            if failed > self.max_failure_rate * done and done >= min(MIN_TRIALS_BEFORE_GIVING_UP, self.n_trials):
                self._save_results(study)
                raise RuntimeError(
                    f"{failed} of {done} trials failed (max_failure_rate={self.max_failure_rate}); the finished "
                    f"trials are kept in {self.storage or 'memory'}, each failed run dir has a status.json"
                )
        self._save_results(study)

    def _save_results(self, study: optuna.Study) -> None:
        """optimization_results.yaml in the sweep dir, as hydra-optuna-sweeper writes it."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "storage": self.storage}
        results["n_trials"] = {state.name.lower(): 0 for state in TrialState}
        for trial in study.get_trials(deepcopy=False):
            results["n_trials"][trial.state.name.lower()] += 1
        if complete:
            best = study.best_trial
            results.update(best_trial=best.number, best_params=best.params, best_value=best.value)
            results["best_output_dir"] = best.user_attrs.get("output_dir")
            log.info("best trial %d: %s = %s", best.number, best.params, best.value)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
