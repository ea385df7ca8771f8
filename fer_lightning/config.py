"""OmegaConf resolvers the configs use; importing this module registers them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
from omegaconf import OmegaConf


@cache
def cpu_has_amx_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and "amx_bf16" in cpuinfo.read_text()


def best_precision(accelerator: str = "auto") -> str:
    """bf16 autocast where the hardware runs it natively (AMX CPUs, bf16 GPUs); fp32 where bf16 would be emulated."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_amx_bf16() else "32-true"


OmegaConf.register_new_resolver("best_precision", best_precision, replace=True)
