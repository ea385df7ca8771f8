"""Scoring a model on data labelled with other classes: over the emotions both have, nothing mapped silently.

A FER+ model (8 classes, contempt among them) on FER-2013 (7), or a FER-2013 model on a dataset with contempt:
both class lists are read in the shared vocabulary (``fer_lightning.labels.canonical``: ``happy`` is
``happiness``). The score covers the faces whose class the model predicts; faces of a class the model lacks
are left out and counted by class. A model's probabilities of the classes the data lacks are dropped and the
rest renormalised, so its prediction is the most probable class the data can hold: a FER+ model's "contempt"
cannot be scored on FER-2013 faces, which no one labelled contempt. Both lists go into metrics.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fer_lightning.labels import canonical


@dataclass(frozen=True)
class SharedClasses:
    """The data's classes the model also predicts, in the data's order and names, and what each side lacks."""

    data_index: tuple[int, ...]
    model_index: tuple[int, ...]
    names: tuple[str, ...]
    model_lacks: tuple[str, ...]
    data_lacks: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return not self.model_lacks and not self.data_lacks and self.model_index == tuple(range(len(self.names)))


def shared_classes(model_classes: Sequence[str], data_classes: Sequence[str]) -> SharedClasses:
    model = {canonical(name): i for i, name in enumerate(model_classes)}
    data = [canonical(name) for name in data_classes]
    both = [i for i, name in enumerate(data) if name in model]
    if not both:
        raise ValueError(
            f"the model predicts {list(model_classes)}, the data is labelled {list(data_classes)}: no emotion in common"
        )
    return SharedClasses(
        data_index=tuple(both),
        model_index=tuple(model[data[i]] for i in both),
        names=tuple(data_classes[i] for i in both),
        model_lacks=tuple(data_classes[i] for i, name in enumerate(data) if name not in model),
        data_lacks=tuple(model_classes[j] for name, j in model.items() if name not in data),
    )


def restrict(
    shared: SharedClasses, labels: torch.Tensor, probs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kept faces' mask, their labels as indices into ``shared.names``, the shared classes' renormalised probs)."""
    relabel = torch.full((len(shared.data_index) + len(shared.model_lacks),), -1, dtype=torch.long)
    relabel[list(shared.data_index)] = torch.arange(len(shared.data_index))
    new = relabel[labels]
    keep = new >= 0
    kept = probs[keep][:, list(shared.model_index)]
    return keep, new[keep], kept / kept.sum(1, keepdim=True).clamp_min(1e-12)
