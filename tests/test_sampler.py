"""SegmentSampler against spec §2.4 and test-set traversal against spec §2.6."""

import io

import numpy as np
import pytest
import torch

from diamond_pl.data.episode import Episode
from diamond_pl.data.sampler import SegmentSampler, check_sample_weights, episode_weights
from diamond_pl.data.store import EpisodeStore
from diamond_pl.data.traversal import Traversal, chunk_windows


def make_store(tmp_path, lengths, last_unfinished=False):
    """Episodes whose frames encode (episode id, step) so windows can be checked against their ids."""
    store = EpisodeStore(tmp_path, "train_dataset")
    for i, n in enumerate(lengths):
        finished = not (last_unfinished and i == len(lengths) - 1)
        obs = np.zeros((n, 3, 64, 64), np.uint8)
        obs[:, 0, 0, 0] = i
        obs[:, 0, 0, 1] = np.arange(n) % 256
        end = np.zeros(n, bool)
        end[-1] = finished
        store.add_episode(Episode(obs=obs, act=np.arange(n) % 4, rew=np.ones(n, np.float32), end=end,
                                  trunc=np.zeros(n, bool),
                                  final_obs=np.full((3, 64, 64), 255, np.uint8) if finished else None))
    return store


def test_episode_weights_groups():
    w = np.array([0.1, 0.1, 0.1, 0.7])
    assert np.allclose(episode_weights(np.ones(8), w), [0.05] * 6 + [0.35] * 2)
    # N = 10: groups of floor(10/4) = 2, the last group takes the 2 leftovers.
    assert np.allclose(episode_weights(np.arange(1, 11), w), [0.05] * 6 + [0.7 / 4] * 4)
    # Per episode, not per step: lengths do not matter once there are >= K episodes.
    assert np.allclose(episode_weights(np.array([1, 100, 1, 100]), w), w)
    # Fewer episodes than weights, or no weights: proportional to length.
    assert np.allclose(episode_weights(np.array([10, 30, 60]), w), [0.1, 0.3, 0.6])
    assert np.allclose(episode_weights(np.array([10, 30, 60, 100]), None), [0.05, 0.15, 0.3, 0.5])


@pytest.mark.parametrize("bad", [(0.5, 0.6), (0.5, 0.5, -0.0001, 0.0001), (1.2, -0.2), "0.1", [], ["a", 1.0],
                                 [True, False], [float("nan"), 1.0], 0.7, {"a": 1.0}])
def test_bad_weights_raise_clear_error(tmp_path, bad):
    with pytest.raises(ValueError, match="sample_weights"):
        check_sample_weights(bad)
    with pytest.raises(ValueError, match="sample_weights"):
        SegmentSampler(EpisodeStore(tmp_path, "s"), 4, 6, sample_weights=bad)


def test_good_weights_accepted():
    assert check_sample_weights(None) is None
    assert check_sample_weights([0.1, 0.1, 0.1, 0.7]).tolist() == [0.1, 0.1, 0.1, 0.7]
    assert check_sample_weights(np.array([0.25] * 4, np.float32)) is not None
    assert check_sample_weights([1]).tolist() == [1.0]


def test_newest_quarter_gets_70_percent(tmp_path):
    lengths = np.random.default_rng(0).integers(8, 40, size=40)
    store = make_store(tmp_path, lengths)
    sampler = SegmentSampler(store, batch_size=256, seq_len=6, seed=0)
    ids = np.concatenate([sampler.sample_windows()[0] for _ in range(60)])  # 15,360 draws
    n = len(ids)
    share_newest = np.mean(ids >= 30)
    assert abs(share_newest - 0.7) < 4 * np.sqrt(0.7 * 0.3 / n)
    for k in range(3):  # each older quarter gets 10 %
        share = np.mean((ids >= 10 * k) & (ids < 10 * (k + 1)))
        assert abs(share - 0.1) < 4 * np.sqrt(0.1 * 0.9 / n)
    # Uniform per episode inside the newest quarter, whatever its length.
    counts = np.bincount(ids[ids >= 30] - 30, minlength=10) / n
    assert np.all(np.abs(counts - 0.07) < 4 * np.sqrt(0.07 * 0.93 / n))


def test_length_proportional_below_four_episodes(tmp_path):
    store = make_store(tmp_path, [10, 30, 60])
    sampler = SegmentSampler(store, batch_size=500, seq_len=6, seed=1)
    ids = np.concatenate([sampler.sample_windows()[0] for _ in range(20)])
    for i, p in enumerate([0.1, 0.3, 0.6]):
        assert abs(np.mean(ids == i) - p) < 4 * np.sqrt(p * (1 - p) / len(ids))


def _check_windows(store, batch, beyond_end):
    t_len = batch.seq_len
    ids, starts, stops = batch.segment_ids.T.numpy()
    lengths = store.lengths[ids]
    assert np.all(stops - starts == t_len)
    steps = starts[:, None] + np.arange(t_len)
    expected_mask = (steps >= 0) & (steps < lengths[:, None])
    assert np.array_equal(batch.mask_padding.numpy(), expected_mask)
    assert expected_mask.any(axis=1).all()
    obs = batch.obs.numpy()
    real = expected_mask
    # Real frames are the right frames of the right episode; padding is zero everywhere.
    assert np.array_equal(obs[..., 0, 0, 0][real], np.broadcast_to(ids[:, None], real.shape)[real])
    assert np.array_equal(obs[..., 0, 0, 1][real], steps[real] % 256)
    assert not obs[~real].any() and not batch.act.numpy()[~real].any() and not batch.rew.numpy()[~real].any()
    if not beyond_end:
        assert np.all(stops <= lengths) and expected_mask[:, -1].all()  # ends on a real step: left padding only


@pytest.mark.parametrize("beyond_end", [False, True])
def test_window_placement_and_masks(tmp_path, beyond_end):
    store = make_store(tmp_path, [3, 20, 9, 40, 7, 15], last_unfinished=True)
    sampler = SegmentSampler(store, batch_size=64, seq_len=8, can_sample_beyond_end=beyond_end, seed=2)
    for _ in range(5):
        _check_windows(store, sampler.sample(), beyond_end)
    ids, starts, stops = map(np.concatenate, zip(*[sampler.sample_windows() for _ in range(50)]))
    right_padded = stops > store.lengths[ids]
    left_padded = starts < 0
    assert left_padded.any()
    assert right_padded.any() == beyond_end
    if beyond_end:
        assert (left_padded & right_padded).any()  # episode of length 3 < T: padding on both sides


def test_last_step_over_represented_without_beyond_end(tmp_path):
    # One episode of length L, T = 6: P(stop = L) = (T + 1) / 2 / L = 0.07; any other stop >= T: 1 / L = 0.02.
    store = make_store(tmp_path, [50])
    sampler = SegmentSampler(store, batch_size=2000, seq_len=6, seed=3)
    stops = np.concatenate([sampler.sample_windows()[2] for _ in range(10)])
    n = len(stops)
    assert abs(np.mean(stops == 50) - 0.07) < 4 * np.sqrt(0.07 * 0.93 / n)
    assert abs(np.mean(stops == 30) - 0.02) < 4 * np.sqrt(0.02 * 0.98 / n)
    # With can_sample_beyond_end the window position of t is uniform: start = t - U{0..5}, t uniform.
    sampler = SegmentSampler(store, batch_size=2000, seq_len=6, can_sample_beyond_end=True, seed=4)
    starts = np.concatenate([sampler.sample_windows()[1] for _ in range(10)])
    assert starts.min() == -5 and starts.max() == 49
    assert abs(np.mean(starts == 20) - 1 / 50) < 4 * np.sqrt(0.02 * 0.98 / n)


def test_windows_can_end_on_the_final_obs_with_with_final_obs(tmp_path):
    # data.denoiser_final_obs: a finished episode of L steps has L + 1 frames, the last its final_obs (all 255 here);
    # an unfinished one keeps L. The window still never sticks out on the right.
    store = make_store(tmp_path, [3, 20, 9, 40, 7, 15], last_unfinished=True)
    sampler = SegmentSampler(store, batch_size=4000, seq_len=6, seed=7, with_final_obs=True)
    batch = sampler.sample()
    ids, starts, stops = batch.segment_ids.numpy().T
    frames = store.lengths[ids] + store.finished[ids]
    assert np.all(stops <= frames) and batch.mask_padding[:, -1].all()
    on_final = stops == store.lengths[ids] + 1
    assert on_final.any() and not on_final[ids == 5].any()  # episode 5 is unfinished
    obs, real = batch.obs.numpy(), batch.mask_padding.numpy()
    last = obs[on_final, -1]
    assert (last == 255).all()  # the final observation, marked real
    assert (obs[~on_final][:, -1, 0, 0, 0] == ids[~on_final]).all()  # other windows end on an ordinary step
    # the final frame's action, reward and flags are padding; every other real step is the episode's own
    assert not batch.rew.numpy()[on_final, -1].any() and not batch.end.numpy()[on_final, -1].any()
    steps = starts[:, None] + np.arange(6)
    assert np.array_equal(real, (steps >= 0) & (steps < frames[:, None]))
    # One finished episode of L = 50, T = 6: t uniform over 51 frames; windows end on the final frame with
    # P = (T + 1) / 2 / 51, as the last step did without the option.
    store50 = make_store(tmp_path / "one", [50])
    stops = np.concatenate([SegmentSampler(store50, 2000, 6, seed=8, with_final_obs=True).sample_windows()[2]
                            for _ in range(5)])
    assert abs(np.mean(stops == 51) - 3.5 / 51) < 4 * np.sqrt(0.07 * 0.93 / len(stops))
    with pytest.raises(ValueError, match="with_final_obs"):
        SegmentSampler(store, 4, 6, can_sample_beyond_end=True, with_final_obs=True)


def test_rank_partition(tmp_path):
    store = make_store(tmp_path, [5] * 10)
    ids = SegmentSampler(store, 512, 4, seed=5, rank=1, world_size=3).sample_windows()[0]
    assert set(ids.tolist()) == {1, 4, 7}
    with pytest.raises(ValueError):
        SegmentSampler(store, 4, 4, rank=3, world_size=3)


def test_state_dict_resumes_stream_and_is_weights_only_safe(tmp_path):
    store = make_store(tmp_path, [12, 7, 30, 9, 15])
    sampler = SegmentSampler(store, 16, 6, seed=6)
    sampler.sample()
    buf = io.BytesIO()
    torch.save(sampler.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    expected = [sampler.sample().segment_ids for _ in range(3)]
    other = SegmentSampler(store, 16, 6, seed=123)
    other.load_state_dict(state)
    for e in expected:
        assert torch.equal(other.sample().segment_ids, e)


def test_sampler_follows_store_changes_and_rejects_empty(tmp_path):
    store = EpisodeStore(tmp_path, "train_dataset")
    sampler = SegmentSampler(store, 8, 4, seed=7)
    with pytest.raises(ValueError, match="empty"):
        sampler.sample()
    store.add_episode(make_store(tmp_path / "a", [5]).get(0))
    assert set(sampler.sample_windows()[0].tolist()) == {0}
    store.add_episode(make_store(tmp_path / "b", [5]).get(0))
    assert set(SegmentSampler(store, 64, 4, seed=8).sample_windows()[0].tolist()) == {0, 1}
    assert set(np.concatenate([sampler.sample_windows()[0] for _ in range(5)]).tolist()) == {0, 1}  # cache renewed


def test_traversal_chunks(tmp_path):
    # L=13: [0,6) [6,12) and [12,18) has 1 real step -> dropped; L=8: [6,12) has 2 -> kept, right-padded;
    # L=1: nothing; L=6: exactly one chunk.
    lengths = [13, 8, 1, 6]
    windows = chunk_windows(np.array(lengths), 6)
    assert windows.tolist() == [[0, 0, 6], [0, 6, 12], [1, 0, 6], [1, 6, 12], [3, 0, 6]]
    store = make_store(tmp_path, lengths)
    traversal = Traversal(store, batch_size=2, seq_len=6)
    batches = list(traversal)
    assert len(traversal) == 3 and [b.batch_size for b in batches] == [2, 2, 1]
    assert torch.cat([b.segment_ids for b in batches]).tolist() == windows.tolist()
    for b in batches:
        _check_windows(store, b, beyond_end=True)
    assert batches[1].mask_padding[1].tolist() == [True, True, False, False, False, False]
