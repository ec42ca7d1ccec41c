"""Training pairs and triplets drawn from identities, for Siamese and triplet networks.

Pairs: two face images and whether they show one person.

Pair ``i`` is a function of ``(seed, i)`` alone (so runs resume and split across ranks exactly): with probability
one half two different images of one person with at least two images (when the data has such a person), otherwise
one image each of two different people. ``batch(indices)`` gives ``((first images, second images), same)`` — the two inputs of a spec like
``specs/siamese-nn4small2.yaml`` and the 1/0 target of its contrastive loss.

Triplets: an anchor, another image of the same person (positive) and an image of someone else (negative), triplet
``i`` a function of ``(seed, i)``; ``batch(indices)`` gives ``((anchors, positives, negatives), zeros)`` for a
three-input network whose `loss` layer reads given triplets (``loss: triplet, mining: none``).
"""
from __future__ import annotations

import numpy as np

from ...data.batches import image_size


class _Drawn:
    """Examples drawn from the identities of ``faces`` (any dataset with ``labels`` and ``batch(indices)``)."""

    what = "examples"

    def __init__(self, faces, n: int, seed: int = 0):
        labels = np.asarray(faces.labels)
        self.faces, self.n, self.seed = faces, n, seed
        self._by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self._repeated_class = [c for c, g in enumerate(self._by_class) if len(g) >= 2]
        self._repeated = [self._by_class[c] for c in self._repeated_class]
        if len(self._by_class) < 2:
            raise ValueError(f"{self.what} need images of at least 2 people; the data has {len(self._by_class)}")
        self.classes: list[str] = []  # the targets are not classes
        self.image_size = image_size(faces)
        self.preprocessing = getattr(faces, "preprocessing", None)

    def __len__(self) -> int:
        return self.n

    def _images(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.faces.batch(rows)[0])


class PairData(_Drawn):
    """``n`` pairs over the images of ``faces``."""

    what = "pairs"

    @property
    def labels(self) -> np.ndarray:
        return np.array([self.pair(i)[2] for i in range(self.n)], dtype=np.int64)

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
        return (self._images(pairs[:, 0]), self._images(pairs[:, 1])), pairs[:, 2]


class TripletData(_Drawn):
    """``n`` (anchor, positive, negative) triplets over the images of ``faces``."""

    what = "triplets"

    def __init__(self, faces, n: int, seed: int = 0):
        super().__init__(faces, n, seed)
        if not self._repeated:
            raise ValueError("triplets need a person with at least 2 images; the data has none")

    @property
    def labels(self) -> np.ndarray:
        return np.zeros(self.n, dtype=np.int64)

    def triplet(self, i: int) -> tuple[int, int, int]:
        rng = np.random.default_rng([self.seed, int(i)])
        person = rng.integers(len(self._repeated))
        anchor, positive = rng.choice(self._repeated[person], size=2, replace=False)
        own = self._repeated_class[person]
        other = int(rng.integers(len(self._by_class) - 1))
        other += other >= own  # any class but the anchor's
        return int(anchor), int(positive), int(rng.choice(self._by_class[other]))

    def batch(self, indices):
        rows = np.array([self.triplet(i) for i in indices], dtype=np.int64).reshape(-1, 3)
        return tuple(self._images(rows[:, k]) for k in range(3)), np.zeros(len(rows), dtype=np.int64)
