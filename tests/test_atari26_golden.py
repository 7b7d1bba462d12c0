"""Atari preprocessing for every game of the benchmark replays the reference's traces exactly
(../shared/golden/atari26/env_traces.npz, README there): full games, no no-op resets, up to 400 steps each.

They match today; the test guards against emulator, ROM or wrapper drift when gymnasium / ale-py / numpy move.
"""

import numpy as np
import pytest

from diamond_pl.envs.atari import AtariEnv
from diamond_pl.games import ATARI_100K_GAMES

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def traces(atari26_traces_path):
    with np.load(atari26_traces_path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_traces_cover_the_26_games(traces):
    games = sorted({k.split("/", 1)[0] for k in traces})
    assert games == sorted(ATARI_100K_GAMES) and len(games) == 26


@pytest.mark.parametrize("game", sorted(ATARI_100K_GAMES))
def test_reference_trace_replays_exactly(traces, game):
    tr = {k.split("/", 1)[1]: v for k, v in traces.items() if k.startswith(game + "/")}
    ref_obs = tr["obs"].transpose(0, 3, 1, 2)  # (T+1, 64, 64, 3) HWC -> CHW
    env = AtariEnv(game, 1, done_on_life_loss=False, noop_max=0, seed=0)
    try:
        assert env.action_meanings == [str(m) for m in tr["action_meanings"]]
        assert env.action_meanings[0] == "NOOP"
        np.testing.assert_array_equal(env.reset()[0], ref_obs[0], err_msg=f"{game}: reset frame")
        frames, rew, term, trunc, life = [], [], [], [], []
        for a in tr["act"]:
            s = env.step(np.array([a]))
            frames.append(s.final_obs[0])  # the frame the step produced, before any automatic reset
            rew.append(s.rew[0])
            term.append(s.end[0])
            trunc.append(s.trunc[0])
            life.append(s.life_loss[0])
    finally:
        env.close()
    frames = np.stack(frames)
    bad = np.flatnonzero((frames != ref_obs[1:]).any(axis=(1, 2, 3)))
    assert bad.size == 0, f"{game}: {bad.size} frames differ, first at step {bad[:1]}"
    np.testing.assert_array_equal(np.array(rew, np.float32), tr["rew"], err_msg=f"{game}: rewards")
    np.testing.assert_array_equal(np.array(term), tr["terminated"], err_msg=f"{game}: terminated")
    np.testing.assert_array_equal(np.array(trunc), tr["truncated"], err_msg=f"{game}: truncated")
    np.testing.assert_array_equal(np.array(life), tr["life_loss"], err_msg=f"{game}: life_loss")
