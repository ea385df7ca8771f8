"""Shared fixtures: compose the real Hydra configs, pointed at a temp dir and tiny synthetic data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from fer_lightning import resolvers
from fer_lightning.conf import CONF_DIR
from fer_lightning.threads import torch_threads

ROOT = Path(__file__).resolve().parents[1]
CONF = CONF_DIR
# Tiny synthetic splits: every test run trains in seconds on 2 CPU cores.
TINY_DATA = ["data.source.train_size=448", "data.source.val_size=112", "data.source.test_size=112"]


def compose_config(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent / "logs")
        cfg.paths.cache_dir = str(output_dir.parent / "cache")
        del cfg.hydra
    return cfg


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> Iterator[None]:
    """Small CPU batches run several times faster on one intra-op thread than on two on a small shared machine:
    two threads wait on each other whenever one is descheduled."""
    with torch_threads(1):
        yield


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("model=vgg", run="a")``: the real train config, tiny synthetic data, its own output dir."""

    def make(*overrides: str, run: str = "run", tiny: bool = True) -> DictConfig:
        extra = TINY_DATA if tiny and not any(o.startswith("data=") for o in overrides) else []
        return compose_config(
            [*extra, "++trainer.enable_progress_bar=false", "callbacks.progress_bar=null", *overrides], tmp_path / run
        )

    return make
