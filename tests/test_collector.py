"""Collector with a small fake env that follows the AtariEnv interface of docs/design.md exactly."""

import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from diamond_pl.data.collector import Collector, Policy, RandomPolicy
from diamond_pl.data.store import EpisodeStore


@dataclass
class FakeEnvStep:
    obs: np.ndarray
    rew: np.ndarray
    end: np.ndarray
    trunc: np.ndarray
    life_loss: np.ndarray
    final_obs: np.ndarray


class FakeEnv:
    """N envs; env i's k-th episode lasts lengths[(i + k) % len(lengths)] steps, then terminates (or truncates if
    `truncate`). Frames encode (env, episode, step) in three pixels; the reward equals the action taken."""

    def __init__(self, num_envs=1, lengths=(7,), num_actions=4, truncate=False):
        self.num_envs, self.num_actions, self.lengths, self.truncate = num_envs, num_actions, lengths, truncate
        self.resets, self.actions = 0, []
        self.episode = np.full(num_envs, -1, np.int64)  # the first reset starts episode 0
        self.t = np.zeros(num_envs, np.int64)
        self._out = np.zeros((num_envs, 3, 64, 64), np.uint8)  # reused output buffer, like a real vector env

    def _frames(self):
        self._out[:, 0, 0, 0] = np.arange(self.num_envs)
        self._out[:, 0, 0, 1] = self.episode % 256
        self._out[:, 0, 0, 2] = self.t % 256
        return self._out

    def _length(self, i):
        return self.lengths[(i + self.episode[i]) % len(self.lengths)]

    def reset(self, seed=None):
        self.resets += 1
        self.episode += 1  # a reset starts new episodes
        self.t[:] = 0
        return self._frames()

    def step(self, actions):
        actions = np.asarray(actions)
        assert actions.dtype == np.int64 and actions.shape == (self.num_envs,)
        self.actions.append(actions.copy())
        self.t += 1
        done = np.array([self.t[i] == self._length(i) for i in range(self.num_envs)])
        final_obs = self._frames().copy()
        self.episode[done] += 1
        self.t[done] = 0
        end = done & (not self.truncate)
        return FakeEnvStep(obs=self._frames(), rew=actions.astype(np.float32), end=end, trunc=done & self.truncate,
                           life_loss=np.zeros(self.num_envs, bool), final_obs=final_obs)


class StatefulFakeEnv(FakeEnv):
    """Can save and restore itself, like the ALE with cloneState."""

    def state_dict(self):
        return {"episode": self.episode.tolist(), "t": self.t.tolist(), "resets": self.resets}

    def load_state_dict(self, state):
        self.episode = np.array(state["episode"], np.int64)
        self.t = np.array(state["t"], np.int64)
        self.resets = state["resets"]


class ConstantPolicy:
    def __init__(self, action=0):
        self.action, self.resets = action, []

    def act(self, obs):
        return np.full(len(obs), self.action, np.int64)

    def reset(self, mask):
        self.resets.append(np.asarray(mask).copy())


def pixels(frames):
    """(episode, step) encoded in a batch of frames."""
    return frames[:, 0, 0, 1].tolist(), frames[:, 0, 0, 2].tolist()


def test_policies_follow_protocol():
    assert isinstance(RandomPolicy(4, seed=0), Policy) and isinstance(ConstantPolicy(), Policy)
    a = RandomPolicy(6, seed=0).act(np.zeros((5, 3, 64, 64), np.uint8))
    assert a.dtype == np.int64 and a.shape == (5,) and a.min() >= 0 and a.max() < 6


def test_train_collector_appends_and_extends_in_progress_episode(tmp_path):
    env, store = FakeEnv(lengths=(7,)), EpisodeStore(tmp_path, "train_dataset")
    collector = Collector(env, store, RandomPolicy(4, seed=0), epsilon=0.0, seed=0)
    assert collector.collect(num_steps=5) == []
    assert len(store) == 1 and store.lengths.tolist() == [5] and not store.get(0).is_finished
    finished = collector.collect(num_steps=5)  # finishes episode 0 at step 7, then 3 steps of episode 1
    ep = store.get(0)
    assert finished == [{"episode_id": 0, "return": ep.ret, "length": 7}]
    assert store.lengths.tolist() == [7, 3] and ep.is_finished and not store.get(1).is_finished
    assert pixels(ep.obs) == ([0] * 7, list(range(7)))  # one continuous episode, no duplicated or lost step
    assert pixels(ep.final_obs[None]) == ([0], [7])
    assert np.array_equal(ep.rew, ep.act.astype(np.float32))  # reward of the action taken at that step
    assert np.array_equal(np.concatenate(env.actions), np.concatenate([ep.act, store.get(1).act]))
    assert env.resets == 1  # the train env loop persists across collections
    collector.collect(num_steps=4)
    assert store.lengths.tolist() == [7, 7] and store.get(1).is_finished and pixels(store.get(1).obs)[0] == [1] * 7
    assert collector.total_steps == 14 and collector.total_episodes == 2


def test_truncated_episode_keeps_final_obs(tmp_path):
    store = EpisodeStore(tmp_path, "s")
    Collector(FakeEnv(lengths=(3,), truncate=True), store, ConstantPolicy()).collect(num_episodes=2)
    ep = store.get(1)
    assert ep.trunc.tolist() == [False, False, True] and not ep.end.any() and ep.final_obs is not None


def test_multi_env_buffers_and_policy_reset_on_done(tmp_path):
    env, store, policy = FakeEnv(num_envs=2, lengths=(3, 5)), EpisodeStore(tmp_path, "s"), ConstantPolicy(1)
    collector = Collector(env, store, policy)
    finished = collector.collect(num_steps=2 * 4)  # 4 vector steps: env 0 ends at t=3; env 1 goes on
    assert [f["length"] for f in finished] == [3]
    assert policy.resets[0].tolist() == [True, True]  # initial reset
    assert [m.tolist() for m in policy.resets[1:]] == [[True, False]]
    # In-progress parts: env 0 has 1 step of its 2nd episode, env 1 has 4 steps of its 1st.
    assert sorted(store.lengths.tolist()) == [1, 3, 4]
    finished = collector.collect(num_steps=2 * 2)  # env 1 finishes at t=5 (its id is reused)
    lengths = {f["episode_id"]: f["length"] for f in finished}
    ep1 = store.get(next(i for i, n in lengths.items() if n == 5))
    assert pixels(ep1.obs) == ([0] * 5, list(range(5))) and np.all(ep1.obs[:, 0, 0, 0] == 1)
    assert [m.tolist() for m in policy.resets[2:]] == [[False, True]]
    assert sum(not store.get(i).is_finished for i in range(len(store))) == 2  # one in progress per env


def test_epsilon_is_one_coin_for_the_whole_batch(tmp_path):
    env = FakeEnv(num_envs=3, lengths=(1000,), num_actions=4)
    Collector(env, EpisodeStore(tmp_path, "s"), ConstantPolicy(0), epsilon=0.5, seed=1).collect(num_steps=3 * 600)
    acts = np.stack(env.actions)
    policy_steps = np.mean(np.all(acts == 0, axis=1))
    # Batch coin: 0.5 + 0.5 / 4**3 ~ 0.508. Per-env coins would give (0.5 + 0.5 / 4)**3 ~ 0.24.
    assert abs(policy_steps - (0.5 + 0.5 / 64)) < 4 * np.sqrt(0.25 / len(acts))
    env0 = FakeEnv(num_envs=3, lengths=(1000,))
    Collector(env0, EpisodeStore(tmp_path / "b", "s"), ConstantPolicy(2), epsilon=0.0).collect(num_steps=300)
    assert np.all(np.stack(env0.actions) == 2)


def test_test_collector_discards_in_progress_and_resets_each_collect(tmp_path):
    env, store, policy = FakeEnv(num_envs=2, lengths=(4, 6)), EpisodeStore(tmp_path, "test_dataset"), ConstantPolicy()
    collector = Collector(env, store, policy, reset_every_collect=True, seed=2)
    finished = collector.collect(num_episodes=1)
    assert [f["length"] for f in finished] == [4]
    assert len(store) == 1 and store.get(0).is_finished  # env 1's 4 steps were discarded
    assert env.resets == 1
    store.clear()
    num_resets = len(policy.resets)
    finished = collector.collect(num_episodes=2)
    assert env.resets == 2 and policy.resets[num_resets].all()  # fresh env and policy state
    assert [f["episode_id"] for f in finished] == [0, 1]
    for i in range(len(store)):
        ep = store.get(i)
        assert ep.is_finished and pixels(ep.obs)[1] == list(range(ep.length))  # each starts at a fresh reset
    assert collector.total_episodes == 3


def test_collect_arguments():
    collector = Collector(FakeEnv(), EpisodeStore("unused", "s"), ConstantPolicy())
    with pytest.raises(ValueError, match="exactly one"):
        collector.collect()
    with pytest.raises(ValueError, match="exactly one"):
        collector.collect(num_steps=1, num_episodes=1)


def _weights_only(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_exact_resume_when_env_has_state(tmp_path):
    def build(d):
        env, store = StatefulFakeEnv(lengths=(6, 9)), EpisodeStore(d, "train_dataset")
        return env, store, Collector(env, store, RandomPolicy(4, seed=3), epsilon=0.3, seed=4)

    env, store, collector = build(tmp_path / "a")
    collector.collect(num_steps=10)
    store_state, collector_state = _weights_only(store.state_dict()), _weights_only(collector.state_dict())
    assert isinstance(collector_state["obs"], bytes)
    collector.collect(num_steps=10)
    collector.collect(num_steps=10)  # the future the resumed run must reproduce

    # Resume in the same directory, after the future was written to disk.
    env2, store2, collector2 = build(tmp_path / "a")
    store2.load_state_dict(store_state)
    collector2.load_state_dict(collector_state)
    assert store2.num_steps == 10
    collector2.collect(num_steps=10)
    collector2.collect(num_steps=10)
    assert store2.lengths.tolist() == store.lengths.tolist()
    for i in range(len(store)):
        a, b = store.get(i), store2.get(i)
        assert np.array_equal(a.obs, b.obs) and np.array_equal(a.act, b.act) and a.is_finished == b.is_finished


def test_resume_without_env_state_restarts_env(tmp_path):
    env, store = FakeEnv(lengths=(8,)), EpisodeStore(tmp_path, "train_dataset")
    collector = Collector(env, store, ConstantPolicy(), seed=5)
    collector.collect(num_steps=5)
    store_state, collector_state = store.state_dict(), _weights_only(collector.state_dict())
    assert collector_state["obs"] is None and collector_state["env"] is None

    env2, store2 = FakeEnv(lengths=(8,)), EpisodeStore(tmp_path, "train_dataset")
    store2.load_state_dict(store_state)
    collector2 = Collector(env2, store2, ConstantPolicy(), seed=6)
    collector2.load_state_dict(collector_state)
    collector2.collect(num_steps=3)
    # The interrupted episode stays unfinished; the env restarted from a reset into a new episode id.
    assert env2.resets == 1 and store2.lengths.tolist() == [5, 3]
    assert not store2.get(0).is_finished and pixels(store2.get(1).obs)[1] == [0, 1, 2]
