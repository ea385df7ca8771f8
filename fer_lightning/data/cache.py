"""The decoded-array cache of the image-file readers: one ``.npz`` per source, keyed by what the arrays came from.

Decoding thousands of image files (and finding the face in each full frame of CK+ or JAFFE) takes seconds to
minutes; a warm load is one uncompressed read. The key is a hash of the reader's options and of every input
file's path, size and mtime, so a changed file, label or option misses the cache and is read again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from fer_lightning.atomic import atomic_write
from fer_lightning.data.splits import SplitArrays

log = logging.getLogger("fer_lightning.data")


def default_cache_dir(cache_dir: str | Path | None) -> Path:
    """``cache_dir``, else ``$FER_LIGHTNING_CACHE``, else ``~/.cache/fer_lightning``."""
    chosen = cache_dir or os.environ.get("FER_LIGHTNING_CACHE") or Path.home() / ".cache" / "fer_lightning"
    return Path(chosen).expanduser().absolute()


def stat_key(path: Path) -> tuple[int, int]:
    """What a cache key remembers of an input file besides its path: size and mtime."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def cached_splits(
    cache_dir: Path, name: str, key: object, build: Callable[[], dict[str, SplitArrays]]
) -> dict[str, SplitArrays]:
    """The splits stored under ``key`` (any JSON-able value), else ``build()``'s, stored for next time."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = cache_dir / f"{name}-{digest}.npz"
    splits = _read(path)
    if splits is not None:
        log.info("%s: cache hit %s", name, path)
        return splits
    splits = build()
    _write(path, splits)
    return splits


def _read(path: Path) -> dict[str, SplitArrays] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {}
            for split in z["splits"]:
                arrays = {f.name: z[f"{f.name}_{split}"] for f in fields(SplitArrays) if f"{f.name}_{split}" in z}
                out[str(split)] = SplitArrays(**{k: torch.from_numpy(v) for k, v in arrays.items()})
        if not out:
            raise ValueError("no splits")
        return out
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unreadable cache %s (%s); rebuilding it", path, exc)
        return None


def _write(path: Path, splits: dict[str, SplitArrays]) -> None:
    """Atomically (temp file + rename): a crash or a full disk never leaves a truncated cache behind."""
    arrays = {"splits": np.array(list(splits))}
    for split, data in splits.items():
        for f in fields(SplitArrays):
            value = getattr(data, f.name)
            if value is not None:
                arrays[f"{f.name}_{split}"] = value.numpy()
    try:
        with atomic_write(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **arrays)
        log.info("cached decoded arrays in %s", path)
    except OSError as exc:
        log.warning("cannot write cache in %s (%s); continuing without cache", path.parent, exc)
