"""The initial collection (reference spec §9.3) with a scripted collector, at the paper's numbers:

  collect 5,000 steps; then, while the minority reward count (the sum of the two smallest of count(r < 0),
  count(r = 0), count(r > 0)) is below 10 and fewer than 10,000 steps were collected, collect 100 more;
  num_epochs_collect = (100,000 - steps collected) / 100.

The smoke config sets threshold_rew 0, so no end-to-end run ever extends the collection; these tests do.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from diamond_pl.data.episode import Episode
from diamond_pl.data.store import EpisodeStore
from diamond_pl.loop.collect_evaluate import CollectAndEvaluate

SPEC = {"total_env_steps": 100_000, "steps_per_epoch": 100, "initial_steps_min": 5_000, "initial_steps_max": 10_000,
        "initial_steps_increment": 100, "threshold_rew": 10}  # fmt: skip


class ScriptedCollector:
    """Appends one episode per call; the reward at global step t is rewards.get(t, 0)."""

    def __init__(self, store: EpisodeStore, rewards: dict[int, float]) -> None:
        self.store, self.rewards, self.num_envs, self.policy = store, rewards, 1, None
        self.calls: list[int] = []

    def collect(self, num_steps: int) -> list[dict]:
        start = self.store.num_steps
        self.calls.append(num_steps)
        rew = np.array([self.rewards.get(start + i, 0.0) for i in range(num_steps)], np.float32)
        obs = np.zeros((num_steps, 3, 4, 4), np.uint8)
        self.store.add_episode(Episode(obs, np.zeros(num_steps, np.int64), rew, np.zeros(num_steps, bool),
                                       np.zeros(num_steps, bool), None))  # fmt: skip
        return []


class Policy:
    def __init__(self) -> None:
        self.resets = 0

    def reset(self, mask) -> None:
        self.resets += 1


def run_initial_collection(tmp_path, rewards: dict[int, float]):
    store = EpisodeStore(tmp_path / "train", "train_dataset")
    cb = CollectAndEvaluate(**SPEC)
    cb.collector = ScriptedCollector(store, rewards)
    cb.policy = Policy()
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_store=store), logger=None, global_rank=0,
                              world_size=1, global_step=0, progress_bar_callback=None)  # fmt: skip
    cb._initial_collection(trainer, SimpleNamespace(num_actions=4))
    return cb, store


@pytest.mark.parametrize(
    "rewards, initial_steps",
    [
        ({t: 1.0 for t in range(100, 1100, 100)}, 5_000),  # 10 positive rewards in the first 5,000: no extension
        # 7 in the first 5,000, then one at 5,150, 5,250, 5,420: 10 only once 5,500 steps are in
        ({**{t: 1.0 for t in range(0, 700, 100)}, 5_150: 1.0, 5_250: 1.0, 5_420: 1.0}, 5_500),
        ({t: 1.0 for t in range(0, 900, 100)}, 10_000),  # only 9 ever: stop at the 10,000-step cap
        ({}, 10_000),  # no reward at all
        # 6 negative + 6 positive = 12 minority-class rewards: enough, although each class alone is below 10
        ({**{t: -1.0 for t in range(6)}, **{t: 3.0 for t in range(10, 16)}}, 5_000),
        # 9 negative and thousands of positives: the minority classes are r < 0 (9) and r = 0 (8,991 -> more)
        ({**{t: -1.0 for t in range(9)}, **{t: 1.0 for t in range(100, 9000)}}, 5_000),
    ],
    ids=["enough", "extended", "capped", "none", "two_classes", "zero_is_not_minority"],
)
def test_initial_collection_extends_until_enough_minority_rewards(tmp_path, rewards, initial_steps):
    cb, store = run_initial_collection(tmp_path, rewards)
    calls = cb.collector.calls
    # the initial part, then epoch 1's 100 steps collected by the current policy
    assert calls[0] == 5_000
    assert calls[1:-1] == [100] * ((initial_steps - 5_000) // 100)
    assert calls[-1] == 100 and sum(calls[:-1]) == initial_steps
    assert cb.num_epochs_collect == (100_000 - initial_steps) // 100
    assert store.num_steps == initial_steps + 100
    assert cb.collector.policy is cb.policy  # back to the actor-critic after the random initial collection


def test_minority_count_is_the_sum_of_the_two_rarest_reward_signs(tmp_path):
    store = EpisodeStore(tmp_path / "s", "train_dataset")
    rew = np.array([-2.0] * 3 + [0.0] * 20 + [5.0] * 7, np.float32)
    store.add_episode(Episode(np.zeros((30, 3, 4, 4), np.uint8), np.zeros(30, np.int64), rew,
                              np.zeros(30, bool), np.zeros(30, bool), None))  # fmt: skip
    assert CollectAndEvaluate._minority_rewards(store) == 3 + 7
