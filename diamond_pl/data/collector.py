"""Collector: steps a Policy in a vectorised real env and appends the episodes to an EpisodeStore (spec §2.7, §7.5).

The env follows the `AtariEnv` interface of docs/design.md: `reset(seed) -> obs` and `step(actions) -> EnvStep` with
obs / rew / end / trunc / final_obs, where `obs` is already the first frame of the next episode for envs that finished
(same-step auto-reset). Each env has a buffer of the steps of its current episode that are not yet in the store.

* Epsilon exploration: one coin per step for the whole batch; heads replaces *all* actions by uniform random ones.
* When an env finishes: its episode (with `final_obs`) goes to the store, prefixed by the part saved unfinished at the
  end of an earlier collection (same id), and the policy's recurrent state of that env is reset.
* Train collector (`reset_every_collect=False`): at the end of a collection the unfinished episodes are saved without
  done flags under their ids, to be extended by the next collection; env, observation and policy state carry over.
* Test collector (`reset_every_collect=True`): the unfinished part is discarded, and every collection starts from a
  fresh env reset and a reset policy.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from diamond_pl.data.episode import Episode
from diamond_pl.data.store import EpisodeStore

STATE_VERSION = 1


@runtime_checkable
class Policy(Protocol):
    """Acts in N envs at once. Optionally also `state_dict()` / `load_state_dict()` for its recurrent state."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """uint8 (N, 3, 64, 64) -> int64 (N,) actions."""
        ...

    def reset(self, mask: np.ndarray) -> None:
        """Zero the recurrent state of the envs where `mask` (bool (N,)) is True."""
        ...


class RandomPolicy:
    """Uniform random actions (what the zero-initialised actor does before training)."""

    def __init__(self, num_actions: int, seed: int | None = None) -> None:
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.integers(0, self.num_actions, size=len(obs))

    def reset(self, mask: np.ndarray) -> None:
        pass

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class _Buffer:
    """Steps of one env's current episode that are not in the store yet."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.obs, self.act, self.rew, self.end, self.trunc = [], [], [], [], []

    def __len__(self) -> int:
        return len(self.obs)

    def append(self, obs, act, rew, end, trunc) -> None:
        self.obs.append(obs)
        self.act.append(act)
        self.rew.append(rew)
        self.end.append(end)
        self.trunc.append(trunc)

    def episode(self, final_obs: np.ndarray | None) -> Episode:
        return Episode(obs=np.stack(self.obs), act=np.array(self.act, dtype=np.int64),
                       rew=np.array(self.rew, dtype=np.float32), end=np.array(self.end, dtype=bool),
                       trunc=np.array(self.trunc, dtype=bool),
                       final_obs=None if final_obs is None else final_obs.copy())


class Collector:
    def __init__(self, env: Any, store: EpisodeStore, policy: Policy, epsilon: float = 0.0,
                 reset_every_collect: bool = False, seed: int | None = None) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.env, self.store, self.policy = env, store, policy
        self.epsilon = epsilon
        self.reset_every_collect = reset_every_collect
        self.num_envs: int = env.num_envs
        self.num_actions: int = env.num_actions
        self.rng = np.random.default_rng(seed)  # epsilon coins, random actions, env reset seeds
        self.total_steps = 0  # agent steps over all collections (all envs)
        self.total_episodes = 0  # finished episodes over all collections (test ids are offset by it in logs)
        self._obs: np.ndarray | None = None  # None: the env loop (re)starts with a reset at the next collection
        self._episode_ids: list[int | None] = [None] * self.num_envs  # id of the part of each episode already stored
        self._buffers = [_Buffer() for _ in range(self.num_envs)]

    def _start(self) -> None:
        self._obs = np.array(self.env.reset(seed=int(self.rng.integers(2**31 - 1))), dtype=np.uint8)
        self.policy.reset(np.ones(self.num_envs, dtype=bool))
        self._episode_ids = [None] * self.num_envs
        for b in self._buffers:
            b.clear()

    def collect(self, num_steps: int | None = None, num_episodes: int | None = None) -> list[dict]:
        """Run until `num_steps` agent steps (summed over envs) or `num_episodes` finished episodes (exactly one of
        the two); return {episode_id, return, length} for each episode that finished."""
        if (num_steps is None) == (num_episodes is None):
            raise ValueError("give exactly one of num_steps and num_episodes")
        if self.reset_every_collect or self._obs is None:
            self._start()
        # Episodes from parallel envs: env i plays a fixed quota, so that short episodes (which finish first) are not
        # over-represented; with one env this is simply "the next num_episodes episodes".
        quota = None
        if num_episodes is not None:
            quota = np.full(self.num_envs, num_episodes // self.num_envs)
            quota[: num_episodes % self.num_envs] += 1
        steps, finished = 0, []
        while (steps < num_steps) if num_steps is not None else (quota > 0).any():
            obs = self._obs
            act = np.asarray(self.policy.act(obs), dtype=np.int64)
            if self.epsilon > 0 and self.rng.random() < self.epsilon:
                act = self.rng.integers(0, self.num_actions, size=self.num_envs)
            step = self.env.step(act)
            done = np.asarray(step.end) | np.asarray(step.trunc)
            for i in range(self.num_envs):
                self._buffers[i].append(obs[i], act[i], step.rew[i], step.end[i], step.trunc[i])
            for i in np.flatnonzero(done):
                if quota is not None:
                    if quota[i] == 0:  # this env has played its share: discard
                        self._buffers[i].clear()
                        continue
                    quota[i] -= 1
                finished.append(self._store(i, self._buffers[i].episode(final_obs=step.final_obs[i])))
            if done.any():
                self.policy.reset(done)
            self._obs = np.array(step.obs, dtype=np.uint8)  # a copy: envs may reuse their output array
            steps += self.num_envs
        self.total_steps += steps
        self.total_episodes += len(finished)
        for i, buffer in enumerate(self._buffers):
            if len(buffer) == 0:
                continue
            if self.reset_every_collect:
                buffer.clear()
            else:
                self._store(i, buffer.episode(final_obs=None))
        return finished

    def _store(self, i: int, part: Episode) -> dict:
        """Add env i's buffered steps to the store, after the part stored earlier; clears the buffer."""
        episode_id = self._episode_ids[i]
        episode = part if episode_id is None else self.store.get(episode_id).extend(part)
        episode_id = self.store.add_episode(episode, episode_id)
        self._episode_ids[i] = None if episode.is_finished else episode_id
        self._buffers[i].clear()
        return {"episode_id": episode_id, "return": episode.ret, "length": episode.length}

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Primitives and bytes only. Call between collections (the buffers are then empty or irrelevant)."""
        if not self.reset_every_collect and any(len(b) for b in self._buffers):
            raise RuntimeError("Collector.state_dict() called in the middle of a collection")
        state: dict[str, Any] = {"version": STATE_VERSION, "rng": self.rng.bit_generator.state,
                                 "total_steps": self.total_steps, "total_episodes": self.total_episodes,
                                 "episode_ids": list(self._episode_ids), "obs": None, "env": None}
        # The env can only be resumed exactly if it can save its own state (e.g. ALE cloneState as bytes).
        if not self.reset_every_collect and self._obs is not None and hasattr(self.env, "state_dict"):
            state["obs"] = np.ascontiguousarray(self._obs, dtype=np.uint8).tobytes()
            state["obs_shape"] = list(self._obs.shape)
            state["env"] = self.env.state_dict()
        if hasattr(self.policy, "state_dict"):
            state["policy"] = self.policy.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Load after the store, so that the episode ids refer to the truncated store."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported collector state version {state.get('version')!r}")
        self.rng.bit_generator.state = state["rng"]
        self.total_steps = int(state["total_steps"])
        self.total_episodes = int(state["total_episodes"])
        for b in self._buffers:
            b.clear()
        if "policy" in state and hasattr(self.policy, "load_state_dict"):
            self.policy.load_state_dict(state["policy"])
        if state["env"] is not None and hasattr(self.env, "load_state_dict"):
            self.env.load_state_dict(state["env"])
            self._obs = np.frombuffer(state["obs"], dtype=np.uint8).reshape(state["obs_shape"]).copy()
            self._episode_ids = list(state["episode_ids"])
        else:
            # No env state: restart from a reset; an episode in progress stays unfinished in the store (spec §11).
            self._obs = None
            self._episode_ids = [None] * self.num_envs
