"""The whole agent learns: `configs/tiny.yaml` on the shipped toy envs (`diamond_pl/envs/toy.py`), the unchanged
DIAMOND loop (random collection -> denoiser -> reward/end -> actor-critic in imagination -> evaluation) must end with a
return far above a random policy's.

Two tests:
- `test_whole_loop_learns_in_ci_minutes` (default suite, 4.5 minutes on 2 cores): tiny.yaml with
  `tests/tiny_ci.yaml` on BombCatchMini-v0, 1,000 real steps.
- `test_tiny_config_learns_far_above_random` (marker `slow`): tiny.yaml as shipped, 2,000 real steps (about 20
  CPU-minutes each), on BombCatch-v0 and on MiniGrid-Empty-5x5 (docs/learning.md gives their results over seeds).

The best return is +1 on both toys. Over FINAL_EPISODES episodes a random policy's mean has a standard error of
0.30 / sqrt(32) = 0.053 (BombCatch-v0: 0.10, std 0.30) or 0.355 / sqrt(32) = 0.063 (BombCatchMini-v0: 4 / 27, std
0.355). The threshold, random + MARGIN, is 9.4 and 8 standard errors above it, and above what each kind of broken
loop reaches (docs/learning.md gives the runs): with the world model's action input scrambled the agent controls
nothing in imagination; with rewards stored one step late the ball's reward, the only one, falls outside the episode;
with end flags dropped before imagination the bombs are harmless, and a policy that catches every ball but ignores
the bombs scores 0.39 on BombCatch-v0 and 0.33 on BombCatchMini-v0.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "diamond_pl.envs.toy:BombCatch-v0"
MINI_ID = "diamond_pl.envs.toy:BombCatchMini-v0"
# mean return of a uniformly random policy: 0.10 (std 0.30 per episode; 4,000 episodes); BombCatchMini-v0 4 / 27
RANDOM_RETURN = {ENV_ID: 0.10, MINI_ID: 4 / 27}
MARGIN = 0.5
FINAL_EPISODES = 32
CI_CONFIG = ROOT / "tests" / "tiny_ci.yaml"  # the CI-sized run: tiny.yaml on BombCatchMini-v0 with less compute
CI = yaml.safe_load(CI_CONFIG.read_text())


def fit_tiny(run_dir: Path, *extra: str, threads: int = 1, env_id: str = ENV_ID) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "diamond_pl", "fit", "--config", str(ROOT / "configs" / "tiny.yaml"),
        f"--data.env_id={env_id}", "--seed_everything=0", f"--loop.final_eval_episodes={FINAL_EPISODES}",
        f"--data.run_dir={run_dir}", f"--trainer.logger.init_args.save_dir={run_dir}/logs", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.run(args, cwd=run_dir, env=env, capture_output=True, text=True, timeout=1800)


def final_return(run_dir: Path, proc: subprocess.CompletedProcess) -> tuple[float, float]:
    """(final evaluation return, real env steps) of a finished run."""
    from diamond_pl.tools.plot import read_scalars

    assert proc.returncode == 0, f"fit failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    scalars = read_scalars(run_dir / "logs")
    return float(scalars["final/return_mean"][1][-1]), float(scalars["env_steps"][1][-1])


def assert_learned(final: float, random_return: float, margin: float = MARGIN) -> None:
    assert final > random_return + margin, (
        f"final return {final:.3f} over {FINAL_EPISODES} episodes is not above random ({random_return}) + {margin}: "
        f"the DIAMOND loop did not learn"
    )


@pytest.mark.learning
def test_whole_loop_learns_in_ci_minutes(tmp_path):
    env_id = CI["data"]["env_id"]
    final, env_steps = final_return(tmp_path, fit_tiny(tmp_path, "--config", str(CI_CONFIG), env_id=env_id, threads=2))
    assert env_steps == CI["loop"]["total_env_steps"]  # the CI budget was spent, not tiny.yaml's
    assert_learned(final, RANDOM_RETURN[env_id])


# MiniGrid-Empty-5x5 (pip install -e ".[minigrid]"): a random policy scores 0.18 (500 episodes; it reaches the goal
# in 37 % of them), the best 0.955. The goal pays 1 - 0.9 steps / 100, so above 0.18 + 0.4 a policy must reach it in
# nearly every episode in under ~45 steps: it walks to the goal.
@pytest.mark.learning
@pytest.mark.slow
@pytest.mark.parametrize("env_id, random_return, margin", [(ENV_ID, RANDOM_RETURN[ENV_ID], MARGIN),
                                                           ("minigrid:MiniGrid-Empty-5x5-v0", 0.18, 0.4)])
def test_tiny_config_learns_far_above_random(tmp_path, env_id, random_return, margin):
    if env_id.startswith("minigrid:"):
        pytest.importorskip("minigrid")
    final, env_steps = final_return(tmp_path, fit_tiny(tmp_path, env_id=env_id))
    budget = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())["loop"]["total_env_steps"]
    assert env_steps == budget  # the config's real-step budget was spent by the loop, not skipped
    assert_learned(final, random_return, margin)


def scripted_policy(env) -> int:
    """Step away from a bomb over the paddle, move under the ball (reads the env's state): the best achievable play."""
    u = env.unwrapped
    if u.stage == u.bombs:
        return int(np.sign(u.x - u.paddle)) + 1
    if u.x == u.paddle:
        return 2 if u.paddle == 0 else 0
    return 1


def play_episode(env, policy, rng, seed: int) -> tuple[list[np.ndarray], list[float], bool]:
    """One episode of `policy(env, rng) -> action`: its frames (the reset one, then one per step, the final frame
    last), its rewards, and whether it terminated."""
    frames, rewards, done = [env.reset(seed=seed)[0]], [], False
    while not done:
        obs, r, term, trunc, _ = env.step(policy(env, rng))
        frames.append(obs)
        rewards.append(r)
        done = term or trunc
    return frames, rewards, term


def play(policy, episodes: int, seed: int = 0, env_id: str = ENV_ID) -> np.ndarray:
    """Returns of `policy(env, rng) -> action` over `episodes` episodes of a BombCatch env."""
    import gymnasium as gym

    env, rng = gym.make(env_id), np.random.default_rng(seed)
    return np.array([sum(play_episode(env, policy, rng, seed + ep)[1]) for ep in range(episodes)])


@pytest.mark.parametrize("env_id", [ENV_ID, MINI_ID])
def test_bombcatch_random_and_best_returns(env_id):
    rand = play(lambda env, rng: int(rng.integers(3)), 2000, env_id=env_id)
    assert abs(rand.mean() - RANDOM_RETURN[env_id]) < 0.05  # the constant the learning tests compare against
    assert (play(lambda env, rng: scripted_policy(env), 300, env_id=env_id) == 1.0).all()  # every episode can be won


@pytest.mark.parametrize("env_id, side, fill", [(ENV_ID, 16, False), (MINI_ID, 8, True)])
def test_bombcatch_shows_the_outcome_on_the_last_observation(env_id, side, fill):
    """The outcome is on the last step's observation (a frame the denoiser learns), not only on the final frame: after
    the frame where the object lands, the paddle alone in the outcome's colour (BombCatch-v0) or the whole screen in
    it (BombCatchMini-v0); the final frame repeats it."""
    import gymnasium as gym

    from diamond_pl.envs.toy import BALL_RGB, BOMB_RGB, CELL, PADDLE_RGB

    def drop(env, rng):  # dodge the bombs, then move away from the ball
        u = env.unwrapped
        return scripted_policy(env) if u.stage < u.bombs else int(np.sign(u.paddle - u.x)) + 1

    env = gym.make(env_id)
    assert env.unwrapped.outcome_fills_screen == fill and env.unwrapped.grid * CELL == side
    cases = {"catch": (lambda env, rng: scripted_policy(env), BALL_RGB, 1.0), "drop": (drop, PADDLE_RGB, 0.0),
             "hit": (lambda env, rng: 1, BOMB_RGB[0], 0.0)}  # fmt: skip
    for name, (policy, colour, ret) in cases.items():
        frames, rewards, term = play_episode(env, policy, None, seed=3)
        landing, last, final = frames[-3:]
        assert rewards[-1] == ret and sum(rewards) == ret and term, name
        assert (final == last).all(), name
        if fill:  # every pixel in the outcome's colour
            assert (last == np.array(colour, np.uint8)).all(), name
        else:  # one cell: the paddle, on the bottom row, in the outcome's colour
            bottom, lit = side - CELL, np.argwhere(last.any(axis=-1))
            assert len(lit) == CELL * CELL and lit[:, 0].min() == bottom, name
            assert tuple(last[bottom, lit[0][1]]) == colour, name
        objects = [tuple(c) for c in landing[side - CELL :].reshape(-1, 3)]  # the object had landed on the step before
        assert BALL_RGB in objects or BOMB_RGB[0] in objects or BOMB_RGB[1] in objects, name


@pytest.mark.parametrize("env_id, side", [(ENV_ID, 16), (MINI_ID, 8)])
def test_bombcatch_frames_go_through_the_pixel_env_unchanged(env_id, side):
    from diamond_pl.envs.spec import EnvSpec

    env = EnvSpec(env_id=env_id, img_size=side).make(2, train=True, seed=0)
    try:
        obs = env.reset(seed=0)
        assert obs.shape == (2, 3, side, side) and obs.dtype == np.uint8 and env.num_actions == 3
        assert set(np.unique(obs)) <= {0, 40, 140, 190, 220, 255}  # 4-pixel cells at their own size: exact colours
    finally:
        env.close()


def test_actor_critic_refuses_a_frame_size_its_pooling_would_crop():
    from diamond_pl.nets.actor_critic_net import ActorCriticNet, ActorCriticNetConfig

    ActorCriticNet(ActorCriticNetConfig(num_actions=3, lstm_dim=8, channels=(4, 4, 4, 4), img_size=16))
    with pytest.raises(ValueError, match="multiple of 16"):  # 24 -> 12 -> 6 -> 3 -> 1 would drop the bottom row
        ActorCriticNet(ActorCriticNetConfig(num_actions=3, lstm_dim=8, channels=(4, 4, 4, 4), img_size=24))


def test_plot_draws_learning_curves_from_tensorboard_scalars(tmp_path):
    pytest.importorskip("matplotlib")
    import json

    from lightning.pytorch.loggers import TensorBoardLogger

    from diamond_pl.tools import plot

    logger = TensorBoardLogger(tmp_path / "run" / "logs", name="toy", version=0)
    for step, (env_steps, ret) in enumerate([(500, -0.2), (600, 0.1), (700, 0.5)]):
        logger.log_metrics({"env_steps": env_steps, "test/return_mean": ret,
                            "denoiser/test/world_model/model_psnr_1step": 20 + step,
                            "denoiser/test/world_model/copy_psnr_1step": 18.0}, step=10 * step)  # fmt: skip
    logger.finalize("success")
    last = tmp_path / "png" / "last.json"  # in a folder that does not exist yet
    plot.main([str(tmp_path / "run"), "--out", str(tmp_path / "png"), "--json", str(last)])
    assert {p.name for p in (tmp_path / "png").iterdir()} == {"returns.png", "world_model.png", "last.json"}
    assert json.loads(last.read_text())["run"]["test/return_mean"] == pytest.approx(0.5)
    steps, values = plot.read_scalars(tmp_path / "run")["test/return_mean"]
    assert list(steps) == [0, 10, 20] and values[0] == pytest.approx(-0.2)
