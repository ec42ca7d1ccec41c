"""Training pairs drawn from identities, for Siamese networks: two face images and whether they show one person.

Pair ``i`` is a function of ``(seed, i)`` alone (so runs resume and split across ranks exactly): with probability
one half two different images of one person with at least two images (when the data has such a person), otherwise
one image each of two different people. ``batch(indices)`` gives ``((first images, second images), same)`` — the two inputs of a spec like
``specs/siamese-nn4small2.yaml`` and the 1/0 target of its contrastive loss.
"""
from __future__ import annotations

import numpy as np

from ...data.batches import image_size


class PairData:
    """``n_pairs`` pairs over the images of ``faces`` (any dataset with ``labels`` and ``batch(indices)``)."""

    def __init__(self, faces, n_pairs: int, seed: int = 0):
        labels = np.asarray(faces.labels)
        self.faces, self.n_pairs, self.seed = faces, n_pairs, seed
        self._by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self._repeated = [g for g in self._by_class if len(g) >= 2]
        if len(self._by_class) < 2:
            raise ValueError(f"pairs need images of at least 2 people; the data has {len(self._by_class)}")
        self.classes: list[str] = []  # the targets are same/different, not classes
        self.image_size = image_size(faces)
        self.preprocessing = getattr(faces, "preprocessing", None)

    def __len__(self) -> int:
        return self.n_pairs

    @property
    def labels(self) -> np.ndarray:
        return np.array([self.pair(i)[2] for i in range(self.n_pairs)], dtype=np.int64)

    def pair(self, i: int) -> tuple[int, int, int]:
        """(first image, second image, 1 if one person else 0) of pair ``i``."""
        rng = np.random.default_rng([self.seed, int(i)])
        if rng.random() < 0.5 and self._repeated:  # (data without a person seen twice: different pairs only)
            group = self._repeated[rng.integers(len(self._repeated))]
            a, b = rng.choice(group, size=2, replace=False)
            return int(a), int(b), 1
        c, d = rng.choice(len(self._by_class), size=2, replace=False)
        return int(rng.choice(self._by_class[c])), int(rng.choice(self._by_class[d])), 0

    def batch(self, indices):
        pairs = np.array([self.pair(i) for i in indices], dtype=np.int64).reshape(-1, 3)
        first, _ = self.faces.batch(pairs[:, 0])
        second, _ = self.faces.batch(pairs[:, 1])
        return (np.asarray(first), np.asarray(second)), pairs[:, 2]
