"""Subject-independent k-fold cross-validation, the protocol of the small lab datasets (CK+, JAFFE).

No subject's faces are in two folds: a model is never tested on a person it was trained on (CK+ has several
sequences per subject, JAFFE about 20 photos per poser, and the same face in train and test inflates the score).
Subjects are dealt to folds largest first, each to the fold with the fewest faces so far; ties between subjects
are broken by a shuffle drawn from ``seed``. The same data and seed give the same folds on every machine.

Fold ``k`` is the test set, fold ``k + 1`` (mod ``folds``) the validation set, the rest the training set.
"""

from __future__ import annotations

import torch

from fer_lightning.data.splits import SplitArrays


def assign_folds(groups: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """The fold (0..folds-1) of every face, from its subject (``groups``)."""
    subjects, counts = torch.unique(groups, return_counts=True)
    if folds < 3:
        raise ValueError(f"data.folds must be at least 3 (test, validation and training folds), got {folds}")
    if len(subjects) < folds:
        raise ValueError(f"data.folds={folds} needs at least {folds} subjects; the data has {len(subjects)}")
    order = torch.randperm(len(subjects), generator=torch.Generator().manual_seed(seed))
    order = order[torch.argsort(counts[order], descending=True, stable=True)]
    sizes = [0] * folds
    fold_of_subject = torch.empty(len(subjects), dtype=torch.int64)
    for i in order.tolist():
        fold = min(range(folds), key=lambda f: (sizes[f], f))
        fold_of_subject[i] = fold
        sizes[fold] += int(counts[i])
    return fold_of_subject[torch.searchsorted(subjects, groups)]


def fold_splits(data: SplitArrays, folds: int, fold: int, seed: int = 0) -> dict[str, SplitArrays]:
    """``{"train", "val", "test"}`` for fold ``fold`` of ``folds``, subject-disjoint (see the module docstring)."""
    if data.groups is None:
        raise ValueError(
            "data.folds needs a source that says whose face each is (data=ckplus, data=jaffe); this one does not"
        )
    if not 0 <= fold < folds:
        raise ValueError(f"data.fold must be in 0..{folds - 1} for data.folds={folds}, got {fold}")
    of = assign_folds(data.groups, folds, seed)
    val = (fold + 1) % folds
    roles = {"train": (of != fold) & (of != val), "val": of == val, "test": of == fold}
    return {role: data.subset(torch.nonzero(mask).flatten()) for role, mask in roles.items()}
