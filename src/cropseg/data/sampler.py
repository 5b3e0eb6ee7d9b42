"""Class-stratified oversampling of patches.

Cropland is rare in most patches; the original workflow duplicated patches of rare
cropland-fraction classes. Here a sampler draws patch ``i`` with probability
proportional to ``n_{c_i} ** -strength``: strength 0 is the plain data distribution,
1 makes every class equally likely. Draws depend only on (seed, epoch), and under DDP
each rank takes a distinct share of one global draw.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def class_weights(classes: Sequence[int], strength: float) -> np.ndarray:
    """Per-item sampling probabilities for oversampling ``strength`` in [0, 1]."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.size == 0:
        return np.zeros(0)
    counts = np.bincount(classes)
    w = counts[classes].astype(np.float64) ** (-float(strength))
    return w / w.sum()


class StratifiedSampler(Sampler[int]):
    """Oversampling sampler, deterministic per (seed, epoch) and split across DDP ranks."""

    def __init__(
        self,
        classes: Sequence[int],
        strength: float = 0.5,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError("strength must be in [0, 1]")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.classes = np.asarray(classes, dtype=np.int64)
        self.strength = float(strength)
        self.total = int(num_samples or len(self.classes))
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self.per_rank = math.ceil(self.total / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch: new draws, same for every rank."""
        self.epoch = int(epoch)

    def global_indices(self) -> np.ndarray:
        """The draw shared by all ranks (padded so that every rank gets as many items)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = self.per_rank * self.num_replicas
        if self.strength == 0.0:
            # Plain epochs: every patch once per pass, shuffled.
            reps = math.ceil(n / len(self.classes))
            idx = torch.cat([torch.randperm(len(self.classes), generator=g) for _ in range(reps)])[:n]
        else:
            probs = torch.as_tensor(class_weights(self.classes, self.strength))
            idx = torch.multinomial(probs, n, replacement=True, generator=g)
        return idx.numpy()

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices()[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.per_rank
