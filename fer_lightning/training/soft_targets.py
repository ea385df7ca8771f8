"""Knowledge distillation from a table of teacher probabilities, one row per training face.

``python -m fer_lightning.distill`` runs the teachers (an ensemble, with test-time augmentation) over the training
split once and saves the table; training reads it with ``module.distill.targets=PATH`` and mixes each face's row
into its target: ``alpha * teacher^(1/T) / sum + (1 - alpha) * label`` (``label``: the one-hot class, or FER+'s
vote distribution). The mixed target goes through the same soft-target cross-entropy as FER+ votes, so mixup,
cutmix and label smoothing apply to it unchanged.

A table costs nothing per step: ten-crop TTA over an ensemble of three costs 30 teacher forward passes per face,
which on 2 CPU cores would take longer than the student's whole training. Its rows are the teachers' fixed
predictions on the un-augmented faces, not on each augmented view the student sees (online distillation); on a
GPU, where teachers are cheap, the online form may pay more. A table is tied to the training split it was made on
by a fingerprint of its faces and labels (``fingerprint``): it is refused on other data, in another order, or with
other classes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_lightning.atomic import atomic_write
from fer_lightning.data.splits import SplitArrays


def fingerprint(split: SplitArrays) -> str:
    """sha256 of a split's faces and labels, in order: what a table's rows belong to."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(split.images.cpu().numpy()).tobytes())
    digest.update(np.ascontiguousarray(split.labels.cpu().numpy()).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class SoftTargets:
    """Teacher probabilities (N, classes) for the faces of one training split, and where they came from."""

    probs: torch.Tensor
    class_names: tuple[str, ...]
    fingerprint: str
    teachers: tuple[str, ...]
    tta: str

    def save(self, path: Path) -> None:
        meta = {"class_names": self.class_names, "fingerprint": self.fingerprint, "teachers": self.teachers}
        meta["tta"] = self.tta
        with atomic_write(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, probs=self.probs.numpy().astype(np.float32), meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> SoftTargets:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"module.distill.targets: {path} does not exist (python -m fer_lightning.distill)")
        try:
            with np.load(path, allow_pickle=False) as z:
                probs, meta = torch.from_numpy(z["probs"]), json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a soft-target table written by fer_lightning.distill: {exc}") from exc
        return cls(probs, tuple(meta["class_names"]), meta["fingerprint"], tuple(meta["teachers"]), meta["tta"])

    def check(self, path: str | Path, split: SplitArrays, class_names: tuple[str, ...]) -> None:
        """Refuse a table made for other faces or classes, naming what differs."""
        if tuple(class_names) != self.class_names:
            raise ValueError(f"{path}: the teachers predict {list(self.class_names)}, the data has {list(class_names)}")
        if len(self.probs) != len(split) or fingerprint(split) != self.fingerprint:
            raise ValueError(
                f"{path}: made for another training split ({len(self.probs)} faces, fingerprint "
                f"{self.fingerprint[:12]}), not this one ({len(split)} faces, {fingerprint(split)[:12]}): "
                "make it again with python -m fer_lightning.distill and the run's data options"
            )


def distilled_targets(hard: torch.Tensor, teacher: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """``alpha`` x the teacher's probabilities softened by ``temperature`` + (1 - ``alpha``) x ``hard`` (N, C)."""
    soft = teacher.float().clamp_min(1e-12).log() / temperature
    return alpha * soft.softmax(-1) + (1 - alpha) * hard
