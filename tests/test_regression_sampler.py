"""Regression guards for the replay sampler (reference spec §2.4) found by mutation testing."""

import numpy as np
import pytest

from diamond_pl.data.episode import Episode
from diamond_pl.data.sampler import SegmentSampler, check_sample_weights
from diamond_pl.data.store import EpisodeStore


def store_of(tmp_path, lengths) -> EpisodeStore:
    store = EpisodeStore(tmp_path / "s", "train_dataset")
    for n in lengths:
        store.add_episode(Episode(np.zeros((n, 3, 4, 4), np.uint8), np.zeros(n, np.int64), np.zeros(n, np.float32),
                                  np.zeros(n, bool), np.zeros(n, bool), None))  # fmt: skip
    return store


def test_zero_group_weights_are_valid_and_never_sampled(tmp_path):
    """The weights need only be non-negative and sum to 1: a zero-weight group is never drawn from."""
    check_sample_weights([0.0, 0.0, 0.3, 0.7])
    with pytest.raises(ValueError, match="non-negative"):
        check_sample_weights([-0.1, 0.1, 0.3, 0.7])
    sampler = SegmentSampler(store_of(tmp_path, [5] * 8), batch_size=256, seq_len=2,
                             sample_weights=[0.0, 0.0, 0.3, 0.7], seed=0)  # fmt: skip
    ids = sampler.sample_windows()[0]
    assert ids.min() >= 4  # groups of 2 episodes: ids 0..3 carry no weight


def test_each_rank_keeps_its_own_episodes_even_a_single_one(tmp_path):
    """With DDP, rank r samples episodes r, r + world, ...; only a rank with no episode at all shares them all."""
    store = store_of(tmp_path, [6, 6, 6])
    rank1 = SegmentSampler(store, batch_size=64, seq_len=2, sample_weights=None, seed=0, rank=1, world_size=2)
    assert set(rank1.sample_windows()[0].tolist()) == {1}
    rank3 = SegmentSampler(store, batch_size=64, seq_len=2, sample_weights=None, seed=0, rank=3, world_size=4)
    assert set(rank3.sample_windows()[0].tolist()) == {0, 1, 2}
