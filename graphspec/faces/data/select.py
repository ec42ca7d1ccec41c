"""Which images a dataset uses, and in which order: pure functions over (path, person) lists.

:func:`balanced_select` is DataVec's ``BalancedPathFilter`` (SEMANTICS.md §10), the reason the tutorial's
iterator yields one image per person. Java's ``Random`` and the file-system listing order are not reproduced
(they are not portable anyway); a numpy generator seeded with ``seed`` shuffles the sorted file list instead.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def balanced_select(items: Sequence[T], labels: Sequence[str], seed: int, *, max_paths: int = 0,
                    max_labels: int = 0, min_per_label: int = 0, max_per_label: int = 0) -> list[int]:
    """Indices into ``items`` chosen and ordered like DataVec's ``BalancedPathFilter``.

    Shuffle (seeded), keep at most ``max_paths`` (0 = all), group by label in order of first appearance (at
    most ``max_labels`` labels, 0 = all), ``k = min(max_per_label, smallest group)`` raised to
    ``min_per_label``; output round-robin: for r < k, the r-th item of each label that has one.

    >>> len(balanced_select(["a1", "a2", "b1"], ["a", "a", "b"], seed=0, max_per_label=48))  # one per label
    2
    """
    order = list(np.random.default_rng(seed).permutation(len(items)))
    if max_paths > 0:
        order = order[:max_paths]
    groups: dict[str, list[int]] = {}
    for i in order:
        if labels[i] not in groups and max_labels > 0 and len(groups) >= max_labels:
            continue
        groups.setdefault(labels[i], []).append(int(i))
    if not groups:
        return []
    k = min(len(g) for g in groups.values())
    if max_per_label > 0:
        k = min(k, max_per_label)
    k = max(k, min_per_label)
    return [g[r] for r in range(k) for g in groups.values() if r < len(g)]


def random_subset(n: int, limit: int, seed: int) -> list[int]:
    """``limit`` indices out of ``n`` drawn with a seeded generator, in increasing order (all when n <= limit)."""
    if limit >= n:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n, size=limit, replace=False))


def split_indices(labels: Sequence[str], fraction: float, seed: int, by: str = "image") -> tuple[list[int], list[int]]:
    """A seeded train/test split of ``range(len(labels))``; each part in increasing order.

    ``by="image"``: a seeded permutation; the first ``round(n * fraction)`` images train.
    ``by="person"``: the distinct people are permuted; the first ``round(p * fraction)`` people train, so no
    person is in both parts (what verification needs).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the train fraction must be in [0, 1]; received {fraction}")
    rng = np.random.default_rng(seed)
    if by == "image":
        perm = rng.permutation(len(labels))
        cut = round(len(labels) * fraction)
        return sorted(int(i) for i in perm[:cut]), sorted(int(i) for i in perm[cut:])
    if by == "person":
        people = sorted(set(labels))
        perm = rng.permutation(len(people))
        train_people = {people[i] for i in perm[:round(len(people) * fraction)]}
        train = [i for i, name in enumerate(labels) if name in train_people]
        return train, [i for i, name in enumerate(labels) if name not in train_people]
    raise ValueError(f"split_by must be 'image' or 'person'; received '{by}'")


def contiguous_split(n: int, fraction: float) -> tuple[list[int], list[int]]:
    """DataVec's ``sample(filter, w, 1 - w)``: the first ``round(n * w)`` items train, the rest test (the order
    is kept, as in DL4J)."""
    cut = round(n * fraction)
    return list(range(cut)), list(range(cut, n))
