"""Real Atari env (diamond_pl/envs/atari.py): reference preprocessing, life-loss semantics, no-ops, resume state."""

from __future__ import annotations

import io

import numpy as np
import pytest

from diamond_pl.envs import atari as atari_mod
from diamond_pl.envs.atari import AtariEnv, EnvStep, area_resize, area_resize_weights, rom_name
from diamond_pl.games import ATARI_100K_GAMES, UnknownGameError

GOLDEN_GAMES = ("Breakout", "Pong", "MsPacman")


def _random_actions(env: AtariEnv, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(env.num_actions, size=(steps, env.num_envs))


def _play(env: AtariEnv, actions: np.ndarray) -> list[EnvStep]:
    return [env.step(a) for a in actions]


# ---------------------------------------------------------------------------------------------------------------------
# (a) exact reproduction of the reference's traces


@pytest.fixture(scope="module")
def env_traces(golden_dir):
    with np.load(golden_dir / "env_traces.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _trace(traces, game):
    return {k.split("/", 1)[1]: v for k, v in traces.items() if k.startswith(game + "/")}


@pytest.mark.golden
@pytest.mark.parametrize("game", GOLDEN_GAMES)
def test_golden_trace_test_env(env_traces, game):
    """The traces are full games (test env): Breakout terminates only at game over, after its 5th life loss."""
    tr = _trace(env_traces, game)
    env = AtariEnv(game, 1, done_on_life_loss=False, noop_max=0, seed=123)
    assert env.action_meanings == [str(m) for m in tr["action_meanings"]]
    ref_obs = tr["obs"].transpose(0, 3, 1, 2)  # (T+1,64,64,3) HWC -> CHW
    obs = env.reset()
    assert obs.dtype == np.uint8 and obs.shape == (1, 3, 64, 64)
    np.testing.assert_array_equal(obs[0], ref_obs[0])
    steps = _play(env, tr["act"][:, None])
    # final_obs is the observation the step produced (before any autoreset); it is the trace's next frame
    np.testing.assert_array_equal(np.stack([s.final_obs[0] for s in steps]), ref_obs[1:])
    np.testing.assert_array_equal(np.array([s.rew[0] for s in steps]), tr["rew"])
    np.testing.assert_array_equal(np.array([s.end[0] for s in steps]), tr["terminated"])
    np.testing.assert_array_equal(np.array([s.trunc[0] for s in steps]), tr["truncated"])
    np.testing.assert_array_equal(np.array([s.life_loss[0] for s in steps]), tr["life_loss"])
    assert all(s.rew.dtype == np.float32 and s.end.dtype == bool for s in steps)
    # while the game goes on, obs is the same frame; after game over (same-step autoreset) it is the new first frame
    for t, s in enumerate(steps):
        expected = ref_obs[0] if tr["terminated"][t] else ref_obs[t + 1]
        np.testing.assert_array_equal(s.obs[0], expected)


@pytest.mark.golden
@pytest.mark.parametrize("game", ("Breakout", "MsPacman"))
def test_golden_trace_train_env(env_traces, game):
    """Train env on the same actions: same frames and rewards, `end` also at each life loss, no reset there."""
    tr = _trace(env_traces, game)
    ref_obs = tr["obs"].transpose(0, 3, 1, 2)
    env = AtariEnv(game, 1, done_on_life_loss=True, noop_max=0)
    env.reset()
    steps = _play(env, tr["act"][:, None])
    end = np.array([s.end[0] for s in steps])
    np.testing.assert_array_equal(end, tr["terminated"] | tr["life_loss"])
    assert end.sum() > tr["terminated"].sum()  # some life losses before game over
    np.testing.assert_array_equal(np.array([s.rew[0] for s in steps]), tr["rew"])
    for t, s in enumerate(steps):
        np.testing.assert_array_equal(s.final_obs[0], ref_obs[t + 1])
        if tr["life_loss"][t] and not tr["terminated"][t]:
            np.testing.assert_array_equal(s.obs[0], s.final_obs[0])  # the game continues from the same frame
        elif tr["terminated"][t]:
            np.testing.assert_array_equal(s.obs[0], ref_obs[0])


# ---------------------------------------------------------------------------------------------------------------------
# (b) life-loss semantics without golden data


def test_train_env_ends_on_life_loss_without_reset_test_env_plays_full_game():
    test_env = AtariEnv("Breakout", 1, done_on_life_loss=False, noop_max=0)
    train_env = AtariEnv("Breakout", 1, done_on_life_loss=True, noop_max=0)
    np.testing.assert_array_equal(test_env.reset(), train_env.reset())
    lives0 = int(train_env.lives[0])
    rng = np.random.default_rng(7)
    game_over_at, life_losses = None, []
    for t in range(2000):
        a = rng.integers(train_env.num_actions, size=1)
        lives_before = int(train_env.lives[0])
        s_test, s_train = test_env.step(a), train_env.step(a)
        np.testing.assert_array_equal(s_test.final_obs, s_train.final_obs)
        np.testing.assert_array_equal(s_test.rew, s_train.rew)
        np.testing.assert_array_equal(s_test.life_loss, s_train.life_loss)
        assert not s_test.trunc[0] and not s_train.trunc[0]
        if s_train.life_loss[0]:
            life_losses.append(t)
            assert s_train.end[0]
        else:
            assert not s_train.end[0]
        if s_test.end[0]:  # full game over: both envs reset in the same step
            assert s_train.end[0] and s_train.life_loss[0]
            game_over_at = t
            assert int(test_env.lives[0]) == lives0
            np.testing.assert_array_equal(s_test.obs, s_train.obs)
            break
        if s_train.life_loss[0]:  # life lost mid-game: no reset, the next episode starts from the same frame
            assert int(train_env.lives[0]) == lives_before - 1 > 0
            np.testing.assert_array_equal(s_train.obs, s_train.final_obs)
        np.testing.assert_array_equal(s_test.obs, s_train.obs)
    assert game_over_at is not None
    assert len(life_losses) == lives0 and life_losses[-1] == game_over_at


def test_vectorised_envs_are_independent_and_reset_in_the_same_step():
    env = AtariEnv("Breakout", 2, done_on_life_loss=False, noop_max=0)
    solo = AtariEnv("Breakout", 1, done_on_life_loss=False, noop_max=0)
    first = env.reset()
    np.testing.assert_array_equal(first[0], first[1])
    solo.reset()
    rng = np.random.default_rng(1)
    ended = 0
    for _ in range(250):
        a = np.array([rng.integers(env.num_actions), 0])  # env 1 only plays NOOP (keeps the ball unlaunched)
        s, s1 = env.step(a), solo.step(a[:1])
        assert s.obs.shape == (2, 3, 64, 64) and s.final_obs.shape == (2, 3, 64, 64)
        np.testing.assert_array_equal(s.obs[0], s1.obs[0])
        np.testing.assert_array_equal(s.final_obs[0], s1.final_obs[0])
        assert not s.end[1]
        if s.end[0]:
            ended += 1
            np.testing.assert_array_equal(s.obs[0], first[0])  # noop_max=0: the reset frame is deterministic
            assert not (s.obs[0] == s.final_obs[0]).all()
    assert ended >= 1


def test_truncation_is_reported_as_trunc_and_resets(monkeypatch):
    """ALE's frame limit (108,000 in use; lowered here to keep the test fast) gives trunc, not end, and resets."""
    monkeypatch.setattr(atari_mod, "MAX_NUM_FRAMES_PER_EPISODE", 40)
    for done_on_life_loss in (False, True):
        env = AtariEnv("Pong", 1, done_on_life_loss=done_on_life_loss, noop_max=3, seed=0)
        env.reset()
        frames0 = int(env.episode_frame_numbers[0])
        assert 1 <= frames0 <= 3  # the reset no-ops count towards the limit, as in ALE
        for t in range(12):
            s = env.step(np.zeros(1, dtype=np.int64))
            assert not s.end[0]
            if s.trunc[0]:
                break
        assert s.trunc[0] and t == -(-(40 - frames0) // 4) - 1
        assert 1 <= int(env.episode_frame_numbers[0]) <= 3  # reset in the same step


# ---------------------------------------------------------------------------------------------------------------------
# (c) game names


def test_unknown_game_lists_valid_games_before_any_emulator_starts(monkeypatch):
    import ale_py

    def no_emulator(*args, **kwargs):
        raise AssertionError("an emulator was started for an invalid game")

    monkeypatch.setattr(ale_py, "ALEInterface", no_emulator)
    with pytest.raises(UnknownGameError) as info:
        AtariEnv("Tetris", done_on_life_loss=False)
    msg = str(info.value)
    assert "Tetris" in msg
    assert all(g in msg for g in ATARI_100K_GAMES)


def test_game_name_forms_and_rom_ids():
    env = AtariEnv("MsPacmanNoFrameskip-v4", done_on_life_loss=False, noop_max=0)
    assert env.game == "MsPacman" and env.gym_id == "MsPacmanNoFrameskip-v4" and env.num_actions == 9
    assert AtariEnv("breakout", done_on_life_loss=True).action_meanings == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    from ale_py import roms

    for g in ATARI_100K_GAMES:
        assert roms.get_rom_path(rom_name(g)) is not None, g


# ---------------------------------------------------------------------------------------------------------------------
# (d) reset no-ops


def test_noop_count_is_uniform_in_1_to_noop_max():
    env = AtariEnv("Pong", 1, done_on_life_loss=False, noop_max=3, seed=0)
    counts = []
    for _ in range(40):
        env.reset()
        counts.append(env._games[0].last_noops)
        # single emulator frames of NOOP, counted by ALE's episode frame number
        assert int(env.episode_frame_numbers[0]) == counts[-1]
    assert set(counts) == {1, 2, 3}
    env0 = AtariEnv("Pong", 1, done_on_life_loss=False, noop_max=0, seed=0)
    env0.reset()
    assert int(env0.episode_frame_numbers[0]) == 0


def test_noop_reset_observations_depend_on_the_seed():
    env = AtariEnv("MsPacman", 3, done_on_life_loss=True, noop_max=30, seed=0)  # sub-env i seeded with 0 + i
    obs = env.reset()
    noops = [g.last_noops for g in env._games]
    assert all(1 <= k <= 30 for k in noops) and len(set(noops)) == 3
    assert len({o.tobytes() for o in obs}) == 3  # the ghosts move during the no-op frames
    np.testing.assert_array_equal(env.reset(seed=0), obs)  # seeded resets are reproducible
    assert [g.last_noops for g in env._games] == noops


def test_seeded_noops_match_ale_py_atari_env():
    """Sub-env i seeded with seed+i draws its no-op count like the reference (ale-py's AtariEnv.np_random)."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    env = AtariEnv("Breakout", 2, done_on_life_loss=False, noop_max=30)
    obs = env.reset(seed=11)
    for i in range(2):
        ref = gym.make("BreakoutNoFrameskip-v4", full_action_space=False, frameskip=1)
        ref.reset(seed=11 + i)
        k = int(ref.unwrapped.np_random.integers(1, 31))
        for _ in range(k):
            ref.step(0)
        assert env._games[i].last_noops == k
        np.testing.assert_array_equal(area_resize(ref.unwrapped.ale.getScreenRGB(), 64), obs[i])
        ref.close()


# ---------------------------------------------------------------------------------------------------------------------
# (e) resume state


def test_state_dict_round_trip_reproduces_the_future_exactly():
    import torch

    env = AtariEnv("Breakout", 2, done_on_life_loss=True, noop_max=30, seed=3)
    env.reset()
    _play(env, _random_actions(env, 20, seed=0))
    buf = io.BytesIO()
    torch.save(env.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    lives_at_save = env.lives
    actions = _random_actions(env, 200, seed=1)
    expected = _play(env, actions)
    assert sum(s.end.sum() for s in expected) >= 5  # the window crosses life losses ...
    assert any((s.end & (s.obs != s.final_obs).any((1, 2, 3))).any() for s in expected)  # ... and a game over

    restored = AtariEnv("Breakout", 2, done_on_life_loss=True, noop_max=30, seed=99)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.lives, lives_at_save)
    for a, s in zip(actions, expected):
        r = restored.step(a)
        for field in ("obs", "final_obs", "rew", "end", "trunc", "life_loss"):
            np.testing.assert_array_equal(getattr(r, field), getattr(s, field), err_msg=field)
    np.testing.assert_array_equal(restored.episode_frame_numbers, env.episode_frame_numbers)


def test_state_dict_rejects_mismatched_envs():
    env = AtariEnv("Pong", 1, done_on_life_loss=False, noop_max=0)
    env.reset()
    state = env.state_dict()
    with pytest.raises(ValueError, match="game"):
        AtariEnv("Breakout", 1, done_on_life_loss=False).load_state_dict(state)
    with pytest.raises(ValueError, match="num_envs"):
        AtariEnv("Pong", 2, done_on_life_loss=False, noop_max=0).load_state_dict(state)
    with pytest.raises(ValueError, match="done_on_life_loss"):
        AtariEnv("Pong", 1, done_on_life_loss=True, noop_max=0).load_state_dict(state)
    with pytest.raises(ValueError, match="noop_max"):
        AtariEnv("Pong", 1, done_on_life_loss=False, noop_max=30).load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        env.load_state_dict({**state, "version": 0})


# ---------------------------------------------------------------------------------------------------------------------
# misc


def test_area_resize_matches_ale_vector_env_opencv():
    """ale-py's AtariVectorEnv resizes with OpenCV's INTER_AREA in C++; our integer area resize gives the same
    frames."""
    from ale_py.vector_env import AtariVectorEnv
    from gymnasium.vector import AutoresetMode

    for game in ("Seaquest", "Alien"):
        vec = AtariVectorEnv(
            rom_name(game), 1, num_threads=1, img_height=64, img_width=64, grayscale=False, stack_num=1,
            noop_max=0, use_fire_reset=False, reward_clipping=False, autoreset_mode=AutoresetMode.SAME_STEP,
            repeat_action_probability=0.0,
        )
        env = AtariEnv(game, 1, done_on_life_loss=False, noop_max=0)
        ref, _ = vec.reset(seed=0)
        np.testing.assert_array_equal(env.reset()[0], ref[0, 0].transpose(2, 0, 1))
        for a in _random_actions(env, 80, seed=2):
            ref, r, term, trunc, _ = vec.step(a.astype(np.int64))
            s = env.step(a)
            if term[0] or trunc[0] or s.end[0]:
                break
            np.testing.assert_array_equal(s.obs[0], ref[0, 0].transpose(2, 0, 1))
            assert float(r[0]) == float(s.rew[0])
        vec.close()


def test_area_resize_weights_and_rounding():
    idx, w = area_resize_weights(210, 64)
    assert (w.sum(1) == 210).all() and idx.shape[0] == 64
    frame = np.full((210, 160, 3), 200, dtype=np.uint8)
    assert (area_resize(frame, 64) == 200).all()
    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    frame[:2, :2] = 255
    np.testing.assert_array_equal(area_resize(frame, 2)[0], [[255, 0], [0, 0]])


def test_step_validation():
    env = AtariEnv("Pong", 2, done_on_life_loss=False, noop_max=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, dtype=np.int64))
    env.reset()
    with pytest.raises(ValueError):
        env.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError):
        env.step(np.array([0, env.num_actions]))
    with pytest.raises(ValueError):
        env.step(np.zeros(2, dtype=np.float32))
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()
    with pytest.raises(ValueError):
        AtariEnv("Pong", done_on_life_loss=False, noop_max=-1)
