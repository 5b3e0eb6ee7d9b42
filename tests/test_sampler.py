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
    glob = ranks[0].global_indices()
    assert parts[0] == glob[0::2].tolist() and parts[1] == glob[1::2].tolist()
    # plain epochs: ranks together see each patch exactly once
    plain = [list(StratifiedSampler(classes, 0.0, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(plain[0] + plain[1]) == list(range(100))
