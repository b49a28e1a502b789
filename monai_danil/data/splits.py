"""Reproducible train/val splits, stratified by label and optionally grouped (e.g. by lesion)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["stratified_split"]


def stratified_split(
    labels: Sequence[Hashable],
    val_fraction: float = 0.15,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> list[str]:
    """Assign each sample to ``"train"`` or ``"val"``, stratified by label, keeping groups together.

    Each group (a lesion, a patient; every sample its own group when ``groups`` is ``None``) is
    labelled with its most frequent label. Per label, the groups are shuffled and moved to val
    until val holds ``round(val_fraction * n)`` of that label's ``n`` samples. A label with at least
    two groups always keeps one group on each side, so every class with two or more groups appears
    in both splits. With groups the fractions hold "as far as grouping allows": one large group can
    overshoot its class's target.

    Args:
        labels: one label per sample (any hashable: class name or number).
        val_fraction: wanted share of each label in val, ``0 < val_fraction < 1``. Default ``0.15``.
        seed: seed of the shuffle; the same inputs and seed give the same split. Default ``0``.
        groups: one group id per sample; samples of a group land on the same side. Default ``None``.

    Returns:
        ``"train"`` or ``"val"`` per sample, in input order.

    Raises:
        ValueError: when ``val_fraction`` is outside ``(0, 1)`` or ``groups`` has another length
            than ``labels``.

    Example:
        >>> stratified_split(["a"] * 4 + ["b"] * 4, val_fraction=0.25, seed=0).count("val")
        2
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction is {val_fraction}; expected a number strictly between 0 and 1.")
    if groups is None:
        groups = list(range(len(labels)))
    if len(groups) != len(labels):
        raise ValueError(
            f"groups has {len(groups)} entries but labels has {len(labels)}; expected one group per sample."
        )

    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    groups_of_label: dict[Hashable, list[Hashable]] = defaultdict(list)
    for group, indices in members.items():
        counts = Counter(labels[i] for i in indices)
        # max() keeps the first of equal counts and Counter keeps first-seen order: deterministic ties
        groups_of_label[max(counts, key=counts.__getitem__)].append(group)

    rng = np.random.default_rng(seed)
    split = ["train"] * len(labels)
    for label in sorted(groups_of_label, key=str):
        label_groups = groups_of_label[label]
        order = rng.permutation(len(label_groups))
        size = sum(len(members[g]) for g in label_groups)
        target = round(val_fraction * size)
        taken = 0
        for position, k in enumerate(order):
            if taken >= target or position == len(label_groups) - 1:
                break
            for index in members[label_groups[k]]:
                split[index] = "val"
            taken += len(members[label_groups[k]])
        if taken == 0 and len(label_groups) >= 2:
            for index in members[label_groups[order[0]]]:
                split[index] = "val"
    return split
