"""The study's storage, from ``hydra.sweeper.storage``, and who may write to it at once.

- ``sqlite:///path/study.db`` (the default): one sweeper process at a time. SQLite's file locking is unsafe on
  NFS and gives ``database is locked`` to concurrent writers, so a second sweeper on the same file is refused at
  its start (an exclusive ``flock`` on ``study.db.lock``, held while the sweep runs, released by the kernel even
  on ``kill -9``), with a message naming the storages that take several.
- ``journal:///path/study.log`` (relative; ``journal:////abs/study.log``, as SQLite URLs write it): Optuna's
  journal file storage, an append-only log guarded by a lock file that needs no ``flock``, so it works on NFS:
  several sweepers on one machine or on a cluster's shared disk.
- ``postgresql://user@host/db`` (or any SQLAlchemy URL Optuna takes, ``mysql://...``): several sweepers anywhere.
  A plain ``postgresql://`` URL is read with psycopg 3 (the ``sweeps`` extra), as ``postgresql+psycopg://``.
- unset: in memory, for this process only.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import random
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

SQLITE, JOURNAL = "sqlite:///", "journal:///"
SEVERAL_WORKERS = "for several sweepers on one study, use journal:///path/study.log or a postgresql:// database"


def _rdb_url(url: str) -> str:
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None:
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _rdb_storage(url: str, attempts: int = 6) -> RDBStorage:
    """``RDBStorage(url)``, retried while other workers create the same tables in a new database.

    Workers started together on an empty database all create Optuna's schema, and all but one fail with a
    duplicate table or key (optuna/optuna#1092; Optuna's advice is to create the study before starting them).
    A retry finds the tables made and goes on.
    """
    for attempt in range(1, attempts):
        try:
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, StorageInternalError):
            time.sleep(random.uniform(0.2, 0.5) * attempt)
    return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})  # the last try raises what it meets


@contextlib.contextmanager
def opened_storage(url: str | None) -> Iterator[BaseStorage | None]:
    """The storage ``url`` names, held for the sweep (SQLite: by this process alone)."""
    if not url:
        yield None
        return
    url = str(url)
    if url.startswith(JOURNAL):
        path = Path(url[len(JOURNAL) :])  # as in SQLite URLs: journal:////abs/path, journal:///relative/path
        path.parent.mkdir(parents=True, exist_ok=True)
        yield JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
        return
    if not url.startswith(SQLITE):
        yield _rdb_storage(_rdb_url(url))
        return
    path = Path(url[len(SQLITE) :])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another sweeper is using the SQLite study {path}: SQLite takes one writer at a time; "
                f"{SEVERAL_WORKERS} (docs/sweeps.md)"
            ) from None
        # SQLite waits this long for a lock of its own (the leaderboard or optuna-dashboard reading the file).
        yield RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})
