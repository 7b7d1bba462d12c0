"""End-to-end modes of `fit` besides the default: model-free, static dataset, mixed precision, config validation."""

import json

import numpy as np
import pytest
import torch

from diamond_pl.data.episode import Episode
from diamond_pl.data.store import EpisodeStore

from helpers.smoke_run import fit


def last(run):
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_model_free_trains_the_actor_critic_on_real_envs_only(tmp_path):
    fit(tmp_path, "--model.model_free=true", "--loop.num_final_epochs=2")
    ckpt = last(tmp_path)
    assert ckpt["epoch"] == 1  # only the final epochs
    assert ckpt["ReplayDataModule"]["train_store"]["lengths"] == []  # no world-model data collected
    # only the actor-critic's optimiser stepped
    steps = [len(o["state"]) for o in ckpt["optimizer_states"]]
    assert steps[0] == 0 and steps[1] == 0 and steps[2] > 0
    # results.json counts the real steps the actor-critic took: smoke.yaml's 2 + 1 updates, each of 4 envs x 5 steps
    # (backup_every 5 in the smoke runs)
    assert ckpt["lr_schedulers"][2]["last_epoch"] == 3
    expected = 3 * 4 * 5
    results = tmp_path / "results.json"
    assert json.loads(results.read_text())["env_steps"] == expected
    results.unlink()  # as if killed between final.ckpt and results.json: the resume writes it, counting the same
    fit(tmp_path, "--model.model_free=true", "--loop.num_final_epochs=2", "--ckpt_path=last")
    assert json.loads(results.read_text())["env_steps"] == expected


def synthetic_dataset(root, num_episodes=3, length=40):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        store = EpisodeStore(root / split, split)
        for _ in range(num_episodes):
            end = np.zeros(length, bool)
            end[-1] = True
            store.add_episode(Episode(
                rng.integers(0, 255, (length, 3, 64, 64), dtype=np.uint8), rng.integers(0, 4, length),
                rng.choice([0.0, 1.0], length).astype(np.float32), end, np.zeros(length, bool),
                rng.integers(0, 255, (3, 64, 64), dtype=np.uint8),
            ))  # fmt: skip


def test_static_dataset_trains_without_collecting(tmp_path):
    data = tmp_path / "static"
    synthetic_dataset(data)
    run = tmp_path / "run"
    run.mkdir()
    fit(run, f"--data.static_dataset={data}", "--loop.num_final_epochs=2", "--loop.eval_every=1")
    ckpt = last(run)
    assert ckpt["epoch"] == 1
    assert ckpt["ReplayDataModule"]["train_store"]["lengths"] == [40, 40, 40]
    assert not (run / "dataset" / "train" / "episodes").exists()  # nothing collected
    assert all(len(o["state"]) > 0 for o in ckpt["optimizer_states"])  # all three components trained


def test_bf16_mixed_precision_runs(tmp_path):
    fit(tmp_path, "--trainer.precision=bf16-mixed", "--loop.total_env_steps=300", "--loop.num_final_epochs=1",
        "--loop.eval_every=0", "--loop.final_eval_episodes=0")
    sd = last(tmp_path)["state_dict"]
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loop.total_env_steps=450"], "not a multiple of steps_per_epoch"),
        (["--data.game=Breakoutt"], "Unknown game 'Breakoutt'"),
        (["--model.actor_critic.num_actions=6"], "num_actions = 6 but Breakout has 4"),
        (["--data.sample_weights=[0.5,0.6]"], "sum"),
    ],
)
def test_inconsistent_config_fails_before_any_work(tmp_path, args, message):
    proc = fit(tmp_path, *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "dataset").exists()  # nothing collected
