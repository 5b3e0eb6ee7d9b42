"""Class-stratified oversampling of patches.

Cropland is rare in most patches; the original workflow duplicated patches of rare
cropland-fraction classes. Here a sampler draws patch ``i`` with probability
proportional to ``n_{c_i} ** -strength``: strength 0 is the plain data distribution,
1 makes every class equally likely. Draws depend only on (seed, epoch, rank).

Under DDP the patches are first dealt out to the ranks, class by class, so that every patch
is on at most one rank in an epoch and every rank holds about ``n_c / world_size`` patches
of each class; each rank then oversamples within its own share. (Splitting one global draw
with replacement instead would put copies of one rare patch on several ranks in one step.)
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from cropseg.errors import UserError


def class_weights(classes: Sequence[int], strength: float) -> np.ndarray:
    """Per-item sampling probabilities for oversampling ``strength`` in [0, 1]."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.size == 0:
        return np.zeros(0)
    counts = np.bincount(classes)
    w = counts[classes].astype(np.float64) ** (-float(strength))
    return w / w.sum()


class Draw(int):
    """A patch index that carries the seed of its random crop and augmentation.

    The key depends on (seed, epoch, rank, position in the epoch) only, so a sample is cut and
    augmented alike whichever DataLoader worker reads it, and a resumed training draws what
    the uninterrupted one drew. It is an ``int`` for everything else (indexing, printing).
    """

    key: int

    def __new__(cls, index: int, key: int) -> "Draw":
        obj = super().__new__(cls, index)
        obj.key = key
        return obj

    def __reduce__(self):  # to DataLoader workers with its key
        return Draw, (int(self), self.key)


class StratifiedSampler(Sampler[int]):
    """Oversampling sampler, deterministic per (seed, epoch), with disjoint per-rank shares under DDP."""

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
        if len(self.classes) < num_replicas:
            raise UserError(f"{len(self.classes)} training patch(es) cannot be shared by {num_replicas} processes "
                            "(trainer.devices x trainer.num_nodes): each needs at least one")
        self.strength = float(strength)
        self.total = int(num_samples or len(self.classes))
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self.per_rank = math.ceil(self.total / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch: new shares and draws."""
        self.epoch = int(epoch)

    def _generator(self, *salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash((self.seed, self.epoch, *salt)) & 0x7FFF_FFFF_FFFF)

    def shares(self) -> list[np.ndarray]:
        """This epoch's disjoint shares of the patches, one per rank (the same on every rank).

        Patches sorted by class, shuffled within each class, dealt round robin from a random
        start: rank shares differ in size by at most one and hold every class in proportion
        (a class with fewer patches than ranks goes to different ranks in different epochs).
        """
        n, world = len(self.classes), self.num_replicas
        g = self._generator(-1)
        perm = torch.randperm(n, generator=g).numpy()
        order = perm[np.argsort(self.classes[perm], kind="stable")]
        start = int(torch.randint(world, (1,), generator=g))
        slot = (np.arange(n) + start) % world
        return [order[slot == r] for r in range(world)]

    def indices(self) -> np.ndarray:
        """The patch indices this rank trains on in this epoch (``len(self)`` of them)."""
        share = self.shares()[self.rank]
        g = self._generator(self.rank)
        if self.strength == 0.0:
            # Plain epochs: every patch of the share once per pass, shuffled.
            reps = math.ceil(self.per_rank / len(share))
            return np.concatenate([share[torch.randperm(len(share), generator=g).numpy()] for _ in range(reps)])[
                : self.per_rank]
        # Each class keeps the probability it has over the whole training set, spread evenly over the
        # share's patches of that class (n_c / in_share_c times each patch's global weight); a class the
        # share lacks gives its weight to the others.
        c = self.classes[share]
        counts = np.bincount(self.classes).astype(np.float64)
        in_share = np.bincount(c, minlength=len(counts)).astype(np.float64)
        w = class_weights(self.classes, self.strength)[share] * counts[c] / in_share[c]
        draws = torch.multinomial(torch.as_tensor(w / w.sum()), self.per_rank, replacement=True, generator=g)
        return share[draws.numpy()]

    def __iter__(self) -> Iterator[int]:
        where = (self.seed, self.epoch, self.rank)
        return iter([Draw(i, hash((*where, k)) & 0x7FFF_FFFF) for k, i in enumerate(self.indices().tolist())])

    def __len__(self) -> int:
        return self.per_rank
