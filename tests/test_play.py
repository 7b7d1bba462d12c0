"""Play mode: the pure key/state logic, and the real pygame loop driven headless by injected key events."""

import sys
from pathlib import Path

import numpy as np

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


# ---------------------------------------------------------------------------------------------------------- recording
def _episode(length, seed, finished=True):
    from diamond_pl.data.episode import Episode

    rng = np.random.default_rng(seed)
    end = np.zeros(length, bool)
    end[-1] = finished
    return Episode(obs=rng.integers(0, 256, (length, 3, 64, 64), dtype=np.uint8), act=rng.integers(0, 4, length),
                   rew=rng.choice([-1.0, 0.0, 1.0], length).astype(np.float32), end=end, trunc=np.zeros(length, bool),
                   final_obs=rng.integers(0, 256, (3, 64, 64), dtype=np.uint8) if finished else None)


def test_recorder_appends_finished_episodes_and_reopens(tmp_path):
    from diamond_pl.data.store import EpisodeStore
    from diamond_pl.tools.play_record import EpisodeRecorder

    ep = _episode(5, 0)
    rec = EpisodeRecorder(tmp_path / "rec")
    for t in range(ep.length):
        rec.add_step(ep.obs[t], ep.act[t], ep.rew[t], ep.end[t], ep.trunc[t], "test", human=True)
    assert rec.finish(ep.final_obs) == tmp_path / "rec" / "rec_test_human" / "episodes" / "000000.npz"
    rec.add_step(ep.obs[0], 1, 0.0, False, False, "wm", human=False)
    rec.start()  # a reset: the unfinished episode is dropped
    with pytest.raises(RuntimeError, match="done"):
        rec.finish(ep.final_obs)

    rec2 = EpisodeRecorder(tmp_path / "rec")  # a later session appends after what is there
    ep2 = _episode(3, 1)
    for t in range(ep2.length):
        rec2.add_step(ep2.obs[t], ep2.act[t], ep2.rew[t], ep2.end[t], ep2.trunc[t], "test", human=True)
    assert rec2.finish(ep2.final_obs).name == "000001.npz"
    store = EpisodeStore.import_directory(tmp_path / "rec" / "rec_test_human")
    assert [e.length for e in store._episodes] == [5, 3] and not (tmp_path / "rec" / "rec_wm_policy").exists()
    got = store.get(0)
    for name in ("obs", "act", "rew", "end", "trunc", "final_obs"):
        assert np.array_equal(getattr(got, name), getattr(ep, name)), name

    (tmp_path / "rec" / "rec_test_human" / "episodes" / "000001.npz").write_bytes(b"not an npz")
    with pytest.raises(ToolError, match="cannot append to .*rec_test_human"):
        EpisodeRecorder(tmp_path / "rec")  # reported when play starts, not after the first episode


def test_play_session_records_what_was_played_in_the_world_model(smoke_run, tmp_path):
    import torch

    from diamond_pl.frames import float_to_uint8, uint8_to_float
    from diamond_pl.data.store import EpisodeStore
    from diamond_pl.tools.checkpoints import load_agent
    from diamond_pl.tools.play_session import PlaySession

    agent = load_agent(smoke_run / "checkpoints" / "last.ckpt")
    session = PlaySession(agent, horizon=3, num_steps_initial_collect=40, seed=0, record_dir=tmp_path / "rec")
    try:
        session.reset("wm")
        session.step(1)  # interrupted by a reset: not recorded
        shown, actions = [session.reset("wm").clone()], [2, 3, 1]
        for a in actions:
            info = session.step(a)
            shown.append(session.frame.clone())
            if info.done:
                break
    finally:
        session.close()
    ep = EpisodeStore.import_directory(tmp_path / "rec" / "rec_wm_human").get(0)
    n = ep.length
    assert n == len(shown) - 1 and (ep.trunc[-1] or ep.end[-1]) and session.last_recorded.name == "000000.npz"
    assert ep.act.tolist() == actions[:n]
    # the first frame is the real context frame, bit for bit (not re-quantised from float, which would move some
    # pixels by one level); the imagined ones are the shown frames quantised as every generated frame is
    assert torch.equal(uint8_to_float(torch.from_numpy(ep.obs[0].copy())), shown[0])
    for t in range(1, n):
        assert np.array_equal(ep.obs[t], float_to_uint8(shown[t]).numpy())
    assert np.array_equal(ep.final_obs, float_to_uint8(shown[n]).numpy())


# ------------------------------------------------------------------------------------------------------- dataset mode
def _two_datasets(root):
    from diamond_pl.data.store import EpisodeStore

    a = EpisodeStore(root / "run" / "dataset" / "train", "train")
    a.add_episode(_episode(12, 0))
    a.add_episode(_episode(4, 1, finished=False))
    b = EpisodeStore(root / "run" / "dataset" / "test", "test")
    b.add_episode(_episode(30, 2))
    return a, b


def test_dataset_browser_keys(tmp_path):
    from diamond_pl.tools.play_dataset import DatasetBrowser, find_datasets

    a, b = _two_datasets(tmp_path)
    datasets = find_datasets([tmp_path / "run"])  # a folder above the stores
    assert datasets == [tmp_path / "run" / "dataset" / "test", tmp_path / "run" / "dataset" / "train"]
    assert find_datasets([tmp_path / "run" / "dataset" / "train" / "episodes"]) == [datasets[1]]
    br = DatasetBrowser(datasets, ["NOOP", "FIRE", "RIGHT", "LEFT"])
    ep = b.get(0)
    for key in ("right", "right", "page up"):
        br.handle(key)
    assert br.t == 12 and np.array_equal(br.frame, ep.obs[12])
    lines = br.header_lines()
    rew = ep.rew.astype(np.float64)
    assert f"return so far {rew[:12].sum():g}   to go {rew[12:].sum():g}" in lines
    assert f"action {['NOOP', 'FIRE', 'RIGHT', 'LEFT'][ep.act[12]]}" in lines[2]
    for _ in range(5):
        br.handle("page up")
    assert br.t == 30 and np.array_equal(br.frame, ep.final_obs) and "final frame" in br.header_lines()[2]
    br.handle("page down"), br.handle("left")
    assert br.t == 19
    br.handle("return")
    assert br.t == 0
    for _ in range(3):
        br.handle("page down")
    assert br.t == 0  # clamped

    assert br.handle("m") == "dataset train" and (br.dataset_index, br.episode_index, br.t) == (1, 0, 0)
    br.handle("down")  # previous episode wraps to the last, which is unfinished: no final frame
    assert br.episode_index == 1
    for _ in range(9):
        br.handle("right")
    assert br.t == 3 and np.array_equal(br.frame, a.get(1).obs[3])
    br.handle("up")
    assert (br.episode_index, br.t) == (0, 0)
    assert br.handle("m") == "dataset test" and br.handle("escape") == "bye" and br.quit


def test_dataset_browser_loads_one_episode_at_a_time_and_skips_damaged_files(tmp_path, monkeypatch, capsys):
    from diamond_pl.data.episode import Episode
    from diamond_pl.tools.play_dataset import DatasetBrowser, find_datasets

    a, b = _two_datasets(tmp_path)
    b.add_episode(_episode(7, 3))
    b.add_episode(_episode(9, 4))
    loaded = []
    real_load = Episode.load.__func__
    monkeypatch.setattr(Episode, "load", classmethod(lambda cls, path: loaded.append(Path(path).name) or real_load(cls, path)))
    br = DatasetBrowser(find_datasets([tmp_path / "run"]))  # test (3 episodes), then train (2)
    assert loaded == ["000000.npz"] and br.notice is None  # only the episode on screen is read
    assert br.handle("up") == "episode 1" and loaded[-1] == "000001.npz" and br.episode.length == 7

    b.path(2).write_bytes(b"PK\x03\x04 not really a zip")  # a damaged file is reported and stepped over
    assert br.handle("up") == "episode 0 (skipped 1 damaged file(s): 000002.npz)" and br.episode_index == 0
    assert "000002.npz is corrupt or truncated" in capsys.readouterr().err  # the full error, on the terminal
    assert br.handle("down") == "episode 1 (skipped 1 damaged file(s): 000002.npz)"  # 0 -> 2 (damaged) -> 1
    assert br.episode_index == 1 and br.t == 0

    for ep_id in range(len(a)):  # a dataset none of whose files can be read: stay where we are
        a.path(ep_id).write_bytes(b"")
    msg = br.handle("m")
    assert msg.startswith("cannot show dataset") and (br.dataset_index, br.episode_index) == (0, 1)
    assert "000000.npz is empty" in capsys.readouterr().err

    b.path(0).write_bytes(b"")  # a damaged first episode at start: the first readable one is shown, with a notice
    br = DatasetBrowser([tmp_path / "run" / "dataset" / "test"])
    assert br.episode_index == 1 and br.notice == "skipped 1 damaged file(s): 000000.npz"
    with pytest.raises(ToolError, match="no episode file .* can be read"):
        DatasetBrowser([tmp_path / "run" / "dataset" / "train"])


def test_dataset_mode_errors(tmp_path):
    from diamond_pl.tools.play_dataset import find_datasets

    with pytest.raises(ToolError, match="no such folder"):
        find_datasets([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolError, match="no episode files"):
        find_datasets([tmp_path / "empty"])
    args = play.parser().parse_args(["--max-frames", "1"])
    with pytest.raises(ToolError, match="needs --ckpt_path .* or -d DIR"):
        play.play(args)


def test_dataset_mode_command_headless(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pygame = pytest.importorskip("pygame", reason="pygame not installed (optional extra: pip install diamond-pl[play])")
    from diamond_pl.tools.play_dataset import DatasetBrowser, find_datasets

    _two_datasets(tmp_path)
    for bad, match in ((["--game", "Nope"], "--game"), (["-r", str(tmp_path / "r")], "records play mode"),
                       (["--ckpt_path", "x.ckpt"], "needs no --ckpt_path")):
        with pytest.raises(ToolError, match=match):
            play.play(play.parser().parse_args(["-d", str(tmp_path / "run"), *bad]))
    stats = play.play(play.parser().parse_args(["-d", str(tmp_path / "run"), "--game", "Breakout", "--max-frames", "3",
                                                "--size", "64", "--fps", "1000"]))
    assert stats["frames"] == 3 and "dataset" in capsys.readouterr().out

    script = {1: [pygame.K_RIGHT, pygame.K_RIGHT], 2: [pygame.K_PAGEUP], 3: [pygame.K_m], 4: [pygame.K_UP],
              5: [pygame.K_ESCAPE]}

    def on_frame(i):
        for key in script.get(i, []):
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))

    browser = DatasetBrowser(find_datasets([tmp_path / "run"]))
    stats = play.run_dataset_window(browser, size=128, fps=1000, max_frames=20, on_frame=on_frame)
    assert stats["shown"] == [(0, 0, 0), (0, 0, 2), (0, 0, 12), (1, 0, 0), (1, 1, 0)]
