"""Expected errors of the Hydra commands as one short message: no 30-line traceback before the line that matters.

A bad data file, a bad config value, a missing or an existing file, a diverged run: these are the user's to fix,
and the message (file, line, problem) says how. ``short_errors`` prints it on stderr as ``train.py: error: ...``
and exits with status 1. The traceback is still kept: in the run's log file (``<run dir>/train.log``; Hydra's
file handler), in status.json for training runs, and printed as before with ``HYDRA_FULL_ERROR=1``. Any other
exception (a bug) keeps Hydra's usual report.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf.errors import OmegaConfBaseException

from fer_lightning.training.callbacks import TrainingDiverged

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # bad rows / images (FER2013DataError), bad option values
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    TrainingDiverged,
    OmegaConfBaseException,  # a missing mandatory value, a bad interpolation
)


def _misconfiguration() -> tuple[type[BaseException], ...]:
    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
    except ImportError:  # pragma: no cover
        return ()
    return (MisconfigurationException,)


def user_error(exc: BaseException) -> BaseException | None:
    """The error to report when ``exc`` is the user's to fix (unwrapped from Hydra's instantiate), else None."""
    if isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        return user_error(exc.__cause__)
    return exc if isinstance(exc, USER_ERRORS + _misconfiguration()) else None


def describe(exc: BaseException) -> str:
    """``exc``'s own message, plus the config key Hydra was building when it came from ``instantiate``."""
    error = user_error(exc) or exc
    message = str(error).strip() or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
        message = f"{error.filename}: {message}"
    if isinstance(exc, InstantiationException):
        key = next((line[len("full_key: ") :] for line in str(exc).splitlines() if line.startswith("full_key: ")), "")
        message += f" (config: {key})" if key else ""
    return message


def _log_files(exc: BaseException) -> list[str]:
    """Write the traceback to the root logger's file handlers only (the console gets the short message)."""
    record = logging.LogRecord("fer_lightning", logging.ERROR, __file__, 0, "failed", None, (type(exc), exc, None))
    record.exc_info = (type(exc), exc, exc.__traceback__)
    files = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            files.append(handler.baseFilename)
    return files


@contextmanager
def short_errors() -> Iterator[None]:
    """Around a Hydra task function: a user error becomes ``<prog>: error: <message>`` and exit status 1."""
    try:
        yield
    except Exception as exc:
        if user_error(exc) is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        files = _log_files(exc)
        prog = Path(sys.argv[0]).name or "fer_lightning"
        where = f"the traceback is in {files[0]}; " if files else ""
        print(f"{prog}: error: {describe(exc)}", file=sys.stderr)
        print(f"({where}HYDRA_FULL_ERROR=1 prints it)", file=sys.stderr)
        raise SystemExit(1) from None
