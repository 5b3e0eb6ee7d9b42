import numpy as np

from cropseg.data.sampler import StratifiedSampler


def _classes():
    # 90 % class 0, a handful of rare classes: the imbalance of real patches.
    return np.array([0] * 90 + [3] * 6 + [7] * 3 + [10] * 1)


def test_deterministic_per_seed_and_epoch():
    a, b = StratifiedSampler(_classes(), 1.0, seed=1), StratifiedSampler(_classes(), 1.0, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(StratifiedSampler(_classes(), 1.0, seed=2)) != first


def test_strength_balances_rare_classes():
    classes = _classes()
    full = StratifiedSampler(classes, 1.0, num_samples=20000, seed=0)
    drawn = np.bincount(classes[list(full)], minlength=11)[[0, 3, 7, 10]] / 20000
    np.testing.assert_allclose(drawn, 0.25, atol=0.02)
    none = StratifiedSampler(classes, 0.0, num_samples=100, seed=0)
    assert sorted(none) == list(range(100))  # plain epoch: each patch once
    half = StratifiedSampler(classes, 0.5, num_samples=20000, seed=0)
    share0 = np.mean(classes[list(half)] == 0)
    assert 0.25 < share0 < 0.9  # between balanced and the data distribution


def test_epoch_length_and_ddp_shares():
    classes = _classes()
    ranks = [StratifiedSampler(classes, 0.5, num_samples=50, seed=3, num_replicas=2, rank=r) for r in range(2)]
    for s in ranks:
        s.set_epoch(4)
    parts = [list(s) for s in ranks]
    assert len(parts[0]) == len(parts[1]) == len(ranks[0]) == 25
    # plain epochs: ranks together see each patch exactly once
    plain = [list(StratifiedSampler(classes, 0.0, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(plain[0] + plain[1]) == list(range(100))


def test_ddp_ranks_never_share_a_patch_and_keep_the_class_balance():
    """Oversampling draws with replacement: a rare patch drawn twice must not land on two ranks."""
    classes = np.array([0] * 80 + [3] * 12 + [7] * 8)
    world = 4
    for epoch in range(5):
        ranks = [StratifiedSampler(classes, 1.0, num_samples=4000, seed=1, num_replicas=world, rank=r)
                 for r in range(world)]
        for s in ranks:
            s.set_epoch(epoch)
        shares = ranks[0].shares()
        assert [list(x) for x in shares] == [list(x) for x in ranks[3].shares()]  # every rank deals alike
        assert sorted(np.concatenate(shares).tolist()) == list(range(100))
        drawn = [set(s) for s in ranks]
        for a in range(world):
            assert drawn[a] <= set(shares[a].tolist())
            for b in range(a + 1, world):
                assert not drawn[a] & drawn[b]
        for r, s in enumerate(ranks):
            # each share holds every class in proportion (n_c / world, +-1) ...
            assert all(abs(np.sum(classes[shares[r]] == c) - np.sum(classes == c) / world) <= 1 for c in (0, 3, 7))
            # ... and each rank draws the classes as strength 1 asks: equally often
            share_of = np.bincount(classes[list(s)], minlength=8)[[0, 3, 7]] / len(s)
            np.testing.assert_allclose(share_of, 1 / 3, atol=0.05)
    # plain epochs with a length that is not a multiple of the ranks: still disjoint
    odd = [set(StratifiedSampler(classes[:99], 0.0, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    assert not odd[0] & odd[1] and len(odd[0] | odd[1]) == 99


def test_fewer_patches_than_ranks_is_a_user_error():
    import pytest

    from cropseg.errors import UserError

    with pytest.raises(UserError, match="1 training patch.*cannot be shared by 2 processes"):
        StratifiedSampler([0], 0.5, num_replicas=2, rank=0)


def test_augmented_samples_depend_on_the_draw_not_on_the_worker(demo_root):
    """Crops and augmentations are seeded by (seed, epoch, rank, position): the same batches from 0 or 2
    workers, and again when the epoch is drawn anew (a resumed training sees what the first one saw)."""
    import torch

    from cropseg.data.datamodule import CroplandDataModule
    from cropseg.data.transforms import AugmentConfig

    def batches(workers):
        dm = CroplandDataModule(root=str(demo_root / "data"), train_list=str(demo_root / "train.txt"),
                                val_list=str(demo_root / "val.txt"), patch_size=64, crop_size=48, batch_size=4,
                                num_workers=workers, oversample=1.0, epoch_length=12, augment=AugmentConfig(),
                                augment_on_device=False, seed=3)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(2)
        return [(b["image"], b["name"], b["key"]) for b in loader]

    one, two = batches(0), batches(2)
    assert len(one) == 3
    for (xa, na, ka), (xb, nb, kb) in zip(one, two):
        assert na == nb and torch.equal(ka, kb) and torch.equal(xa, xb)
