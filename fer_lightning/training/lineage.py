"""Which teachers made a distilled model, down to the teachers of its teachers.

A distilled checkpoint keeps the path of its soft-target table (``module.distill.targets``) and the table keeps
its teachers' paths, so the ensemble behind a model can be read back as long as those files are where they were
made. ``fer-export`` writes it into the file's metadata (``distilled_from``), so a shipped model names the
ensemble it learnt from even after the runs are gone. Each file is named by its run folder and file name (not
the machine's absolute path) and the first 16 hex digits of its sha256, which tell two runs' ``last.ckpt`` apart.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from fer_lightning.training.soft_targets import SoftTargets

DIGEST_CHARS = 16


def short_name(path: Path) -> str:
    """``<run>/last.ckpt`` for a run's checkpoint (``<run>/checkpoints/last.ckpt``), else ``<folder>/<file>``."""
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"{folder.name}/{path.name}" if folder.name else path.name


def sha256_prefix(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:DIGEST_CHARS]


def distill_table(ckpt_path: Path) -> Path | None:
    """The soft-target table a checkpoint was trained on, or None for a checkpoint trained without one."""
    hparams = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {})
    targets = (hparams.get("distill") or {}).get("targets")
    return Path(targets) if targets else None


def distilled_from(ckpt_path: str | Path) -> dict | None:
    """The table and teachers behind a checkpoint, each teacher with its own ``distilled_from``; None when it was
    not distilled. A table or teacher that is no longer on disk is named with ``"found": false``."""
    table_path = distill_table(Path(ckpt_path))
    if table_path is None:
        return None
    if not table_path.is_file():
        return {"table": short_name(table_path), "found": False}
    table = SoftTargets.load(table_path)
    teachers = [describe_model(Path(teacher)) for teacher in table.teachers]
    return {"table": short_name(table_path), "tta": table.tta, "teachers": teachers}


def describe_model(path: Path) -> dict:
    """A model file's name and sha256 prefix, and the teachers it was distilled from (a checkpoint's)."""
    if not path.is_file():
        return {"model": short_name(path), "found": False}
    entry: dict = {"model": short_name(path), "sha256": sha256_prefix(path)}
    if path.suffix == ".ckpt":
        parents = distilled_from(path)
        if parents is not None:
            entry["distilled_from"] = parents
    return entry
