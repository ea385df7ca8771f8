"""The OmegaConf resolvers the configs use, registered by ``register()`` before a config is composed."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


@cache
def cpu_has_amx_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and "amx_bf16" in cpuinfo.read_text()


def best_precision(accelerator: str = "auto") -> str:
    """bf16 autocast where the hardware runs it natively (AMX CPUs, bf16 GPUs); fp32 where bf16 would be emulated."""
    import torch  # here, not at the top: resolving a config should not need torch before a run does

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_amx_bf16() else "32-true"


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_name() -> str | None:
    """The multirun's dir name, the same for all of its jobs: W&B groups a sweep's runs by it (``${sweep_name:}``).

    A resolver rather than ``${now:...}``: the sweep dir may be overridden, and then no job shares its timestamp.
    """
    return Path(HydraConfig.get().sweep.dir).name if is_multirun() else None


def data_root(env: str, default: str, *, _root_: DictConfig) -> str:
    """A dataset's directory (``${data_root:CKPLUS_DIR,data/ckplus}``): ``paths.data_dir`` when it is set, else the
    dataset's own environment variable, else ``default``. One override serves every dataset config, while each
    dataset keeps a variable of its own, so FER-2013 and CK+ can both be set in a shell."""
    chosen = OmegaConf.select(_root_, "paths.data_dir", default=None)
    return str(chosen) if chosen is not None else os.environ.get(env, default)


def required(message: str) -> str:
    """A value the command line must give (``${required:'what to pass'}``), where ``???`` cannot serve: an
    experiment's ``???`` does not replace the default it is merged over, so the run would go on without it."""
    raise ValueError(message)


def register() -> None:
    """Idempotent; every entry point that composes a config calls it first."""
    OmegaConf.register_new_resolver("best_precision", best_precision, replace=True)
    OmegaConf.register_new_resolver("sweep_name", sweep_name, replace=True)
    OmegaConf.register_new_resolver("data_root", data_root, replace=True)
    OmegaConf.register_new_resolver("required", required, replace=True)
