"""Several datasets trained as one (``data=mixed``): every member's faces in one shared class list.

Each member is a whole data config (``data.source.members.<name>``: FER-2013, RAF-DB, AffectNet, CK+ with its
folds...), so it keeps its own splits, validation carving and folds. Its class names are read in the shared
vocabulary (``fer_lightning.labels.canonical``) and its labels mapped onto the mix's classes: ``classes`` when
given (faces of other classes are left out and counted), else every class any member has, in the shared
vocabulary's order. Soft targets (FER+ votes) keep working: when a member trains on vote distributions, the mix
does too, and the faces of the other members get one-hot targets.

``weights`` (per member, default 1) scale how often a member's faces are drawn in training: member m's share of
the training batches is ``w_m n_m / sum(w n)``; with equal weights every face is seen once per epoch as in a
single dataset. Validation and test hold every member's split; each face remembers its member (``origins``), so
the scores are also reported per member (``val/acc/<member>``, ``test/acc/<member>``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch

from fer_lightning.data.splits import SplitArrays
from fer_lightning.labels import CANONICAL, canonical

log = logging.getLogger("fer_lightning.data")
ROLES = ("train", "val", "test")


class MixedSource:
    """The members' train / val / test splits, relabelled into one class list and concatenated."""

    def __init__(
        self,
        members: Mapping[str, object],
        weights: Mapping[str, float] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if not members:
            raise ValueError("data=mixed needs at least one member in data.source.members")
        self.members = dict(members)  # name -> FERDataModule
        self.member_names = tuple(self.members)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.members))
        if unknown:
            raise ValueError(f"data.source.weights names {unknown}, which are not members ({list(self.members)})")
        self.weights = tuple(float(weights.get(name, 1.0)) for name in self.member_names)
        if any(w <= 0 for w in self.weights):
            raise ValueError(f"data.source.weights must be positive, got {dict(zip(self.member_names, self.weights))}")
        member_classes = {name: [canonical(c) for c in m.class_names] for name, m in self.members.items()}
        if classes:
            self.class_names = tuple(canonical(c) for c in classes)
        else:
            present = {c for names in member_classes.values() for c in names}
            self.class_names = tuple(c for c in CANONICAL if c in present)
        self._maps = {
            name: torch.tensor([self.class_names.index(c) if c in self.class_names else -1 for c in names])
            for name, names in member_classes.items()
        }
        modes = {m.label_mode for m in self.members.values()} - {"majority"}
        if len(modes) > 1:
            raise ValueError(f"the members train on different soft targets ({sorted(modes)}): choose one mode")
        self.label_mode = modes.pop() if modes else "majority"

    def load(self) -> dict[str, SplitArrays]:
        out: dict[str, list[SplitArrays]] = {role: [] for role in ROLES}
        for origin, (name, member) in enumerate(self.members.items()):
            member.setup("fit")
            for role in ROLES:
                if member.has_split(role):
                    out[role].append(self._relabelled(name, origin, member.splits[role]))
        missing = [role for role in ("train", "val") if not out[role]]
        if missing:
            raise ValueError(f"no member of the mix has a {missing[0]} split")
        try:
            return {role: SplitArrays.concat(parts) for role, parts in out.items() if parts}
        except ValueError as exc:
            sizes = {n: tuple(m.splits["train"].images.shape[1:]) for n, m in self.members.items()}
            raise ValueError(f"the members' faces must have one size (data.source.image_size): {sizes}") from exc

    def _relabelled(self, name: str, origin: int, split: SplitArrays) -> SplitArrays:
        mapping = self._maps[name]
        labels = mapping[split.labels]
        keep = torch.nonzero(labels >= 0).flatten()
        if len(keep) < len(split):
            dropped = torch.bincount(split.labels[labels < 0], minlength=len(mapping))
            names = self.members[name].class_names
            log.info(
                "mix: %s faces left out (classes not in the mix): %s",
                name,
                {names[i]: int(n) for i, n in enumerate(dropped.tolist()) if n},
            )
        targets = None
        if self.label_mode != "majority":
            targets = torch.zeros(len(split), len(self.class_names))
            if split.targets is not None:
                columns = torch.nonzero(mapping >= 0).flatten()
                targets[:, mapping[columns]] = split.targets[:, columns].float()
                targets = targets / targets.sum(1, keepdim=True).clamp_min(1e-12)
            else:
                targets[torch.arange(len(split)), labels.clamp_min(0)] = 1.0
        # groups are left behind: each member numbers its own subjects, and its folds are made inside it already
        mixed = SplitArrays(split.images, labels.clamp_min(0), targets, origins=torch.full_like(labels, origin))
        return mixed.subset(keep)
