"""Files that readers never see half-written and that a crash never truncates."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write; it replaces ``path`` only if the block succeeds.

    The file gets the permissions a plain ``open(path, "w")`` would give (mkstemp's own are 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_durably(path: str | Path, data: bytes, mode: str = "wb") -> None:
    """``data`` into ``path``, on the disk (not only in the page cache) when this returns; ``r+b`` overwrites the
    file's first bytes in place, in the blocks it already has."""
    with Path(path).open(mode) as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def check_writable(path: str | Path, force: bool = False, inputs: Iterable[str | Path] = ()) -> Path:
    """Refuse, before any work is done, an output the tool must not or cannot write; returns ``path``.

    Never one of ``inputs`` (not even with ``force``), never an existing file without ``force``, never a folder;
    and its folder must exist (or be creatable) and take a new file. Errors name ``path``, not a temporary file.
    """
    path = Path(path).expanduser()
    for item in inputs:
        item = Path(item).expanduser()
        if item.exists() and path.exists() and os.path.samefile(item, path):
            raise FileExistsError(f"{path} is one of the inputs: refusing to write over it (choose another output)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory: give a file name for the output")
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise PermissionError(
            f"cannot write {path}: no new file can be made in {path.parent} ({exc.strerror or exc})"
        ) from None
    return path
