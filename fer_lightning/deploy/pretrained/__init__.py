"""The models that ship inside the package, so recognition works at install with nothing to download.

Each is an ONNX file made by ``make models`` from the user's own copy of the data (see docs/model_card.md for
the recipe and the measured figures), next to ``<name>.json``: its sha256, class names, and the outputs it gave
on a few synthetic faces when it was made, which the tests compare against.
"""

from __future__ import annotations

import json
from pathlib import Path

PRETRAINED = ("fer2013", "ferplus")
DEFAULT = "fer2013"
HERE = Path(__file__).resolve().parent


def pretrained_path(name: str) -> Path:
    """The ONNX file of a shipped model: ``fer2013`` (7 classes) or ``ferplus`` (8 classes)."""
    if name not in PRETRAINED:
        raise ValueError(f"no shipped model named {name!r}; the shipped models are {', '.join(PRETRAINED)}")
    path = HERE / f"{name}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"the shipped model {name!r} is not in this installation ({path}); `make models`")
    return path


def available() -> list[str]:
    return [name for name in PRETRAINED if (HERE / f"{name}.onnx").is_file()]


def record(name: str) -> dict:
    """What ``make models`` recorded about a shipped model (``<name>.json``)."""
    return json.loads((HERE / f"{name}.json").read_text())
