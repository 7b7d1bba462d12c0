"""Play mode: the pure key/state logic, and the real pygame loop driven headless by injected key events."""

import sys

import pytest

from diamond_pl.tools import play
from diamond_pl.tools.common import ToolError
from diamond_pl.tools.play_controls import (
    ENVS,
    PlayState,
    action_from_keys,
    action_key_map,
    describe_mapping,
    keys_of_meaning,
)

FULL = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT", "UPFIRE",
        "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE"]
BREAKOUT = ["NOOP", "FIRE", "RIGHT", "LEFT"]


def test_keys_of_meaning():
    assert keys_of_meaning("NOOP") == frozenset()
    assert keys_of_meaning("UPRIGHTFIRE") == {"w", "d", "space"}
    assert keys_of_meaning("downleft") == {"s", "a"}
    with pytest.raises(ValueError):
        keys_of_meaning("JUMP")


def test_full_action_set_every_combination():
    key_map = action_key_map(FULL)
    assert len(key_map) == 18
    for i, meaning in enumerate(FULL):
        assert action_from_keys(keys_of_meaning(meaning), key_map) == i


def test_longest_combination_wins_and_missing_ones_fall_back():
    key_map = action_key_map(FULL)
    assert action_from_keys({"w", "d", "space", "s"}, key_map) == FULL.index("UPRIGHTFIRE")  # a 3-key combo wins
    assert action_from_keys(set(), key_map) == 0
    b = action_key_map(BREAKOUT)
    assert action_from_keys({"d", "space"}, b) == 1  # no RIGHTFIRE in Breakout: tie of singles -> lower index (FIRE)
    assert action_from_keys({"a"}, b) == 3
    assert action_from_keys({"w"}, b) == 0  # UP does not exist in Breakout -> NOOP
    assert describe_mapping(BREAKOUT)[0].endswith("NOOP") and "Space" in describe_mapping(BREAKOUT)[1]


def test_state_machine():
    s = PlayState(horizon=2)
    assert s.need_reset and s.env == "wm" and s.human
    s.need_reset = False
    s.handle("down")
    s.handle("down")  # min 1
    assert s.horizon == 1 and s.need_reset
    s.handle("up")
    assert s.horizon == 2
    s.need_reset = False
    s.handle("m")
    assert not s.human and s.need_reset
    s.handle("right")
    assert s.env == "test"
    assert s.handle("up") == "the horizon applies to the world model only" and s.horizon == 2
    s.handle("right")
    s.handle("right")
    assert s.env == "wm"
    s.handle("left")
    assert s.env == ENVS[-1]
    s.handle(".")
    assert s.paused and not s.should_step()
    s.handle("e")
    assert s.should_step() and not s.should_step()  # exactly one step per e
    s.handle(".")
    assert s.should_step()
    assert s.handle("x") is None
    s.handle("escape")
    assert s.quit


def test_missing_pygame_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # makes `import pygame` raise ImportError
    with pytest.raises(ToolError, match=r'pip install "diamond-pl\[play\]"'):
        play.import_pygame()


def test_pygame_loop_headless(smoke_run, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pygame = pytest.importorskip("pygame", reason="pygame not installed (optional extra: pip install diamond-pl[play])")
    from diamond_pl.tools.checkpoints import load_agent
    from diamond_pl.tools.play_session import PlaySession

    agent = load_agent(smoke_run / "checkpoints" / "last.ckpt")
    session = PlaySession(agent, horizon=3, num_steps_initial_collect=40, seed=0)
    script = {
        1: [(pygame.KEYDOWN, pygame.K_d)],  # hold D: RIGHT
        4: [(pygame.KEYUP, pygame.K_d), (pygame.KEYDOWN, pygame.K_SPACE)],  # FIRE
        7: [(pygame.KEYUP, pygame.K_SPACE), (pygame.KEYDOWN, pygame.K_RIGHT)],  # -> real test env
        9: [(pygame.KEYDOWN, pygame.K_PERIOD)],  # pause
        10: [(pygame.KEYDOWN, pygame.K_e)],  # one step
        12: [(pygame.KEYDOWN, pygame.K_PERIOD), (pygame.KEYDOWN, pygame.K_m)],  # resume, policy control
        14: [(pygame.KEYDOWN, pygame.K_RIGHT)],  # -> real train env
        17: [(pygame.KEYDOWN, pygame.K_ESCAPE)],
    }

    def on_frame(i):
        for kind, key in script.get(i, []):
            pygame.event.post(pygame.event.Event(kind, key=key))

    state = PlayState(horizon=3)
    try:
        stats = play.run_window(session, state, size=128, fps=1000, max_frames=40, on_frame=on_frame)
    finally:
        session.close()
    assert state.quit and stats["frames"] == 17  # Escape at frame 17 ends the loop before drawing it
    assert [e for i, e in enumerate(stats["envs"]) if i == 0 or e != stats["envs"][i - 1]] == ["wm", "test", "train"]
    assert 2 in stats["actions"] and 1 in stats["actions"]  # RIGHT and FIRE from the held keys
    assert not state.human and stats["steps"] >= 5


def test_play_command_headless(smoke_run, monkeypatch, capsys):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pytest.importorskip("pygame", reason="pygame not installed (optional extra: pip install diamond-pl[play])")
    stats = play.play(play.parser().parse_args([
        "--ckpt_path", str(smoke_run / "checkpoints" / "last.ckpt"), "-n", "30", "--max-frames", "4", "--size", "130",
        "--fps", "1000", "--policy", "--seed", "0", "--device", "cpu",
    ]))  # fmt: skip
    assert stats["frames"] == 4 and stats["resets"] >= 1
    out = capsys.readouterr().out
    assert "Breakout actions" in out and "FIRE" in out
