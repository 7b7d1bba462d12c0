"""Any gymnasium pixel env behind the env contract, end to end: the adapter, the config, fit + resume, the tools, and
Minari import/export. The env is `Catch-v0`, defined and registered by tests/helpers/pixel_envs.py."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import pixel_envs  # noqa: E402,F401  (registers Catch-v0, NoImages-v0, Continuous-v0)
from smoke_run import fit  # noqa: E402

from diamond_pl.agent import DiamondAgent  # noqa: E402
from diamond_pl.data.episode import Episode  # noqa: E402
from diamond_pl.data.store import EpisodeStore  # noqa: E402
from diamond_pl.envs.gym_env import EnvSpecError, GymEnv  # noqa: E402
from diamond_pl.envs.resize import resize_frame  # noqa: E402
from diamond_pl.envs.spec import EnvSpec  # noqa: E402

CATCH = "pixel_envs:Catch-v0"
TINY_NETS = {  # smallest networks that build at any frame size
    "denoiser": {"cond_channels": 8, "depths": [1, 1], "channels": [8, 8], "attn_depths": [0, 0]},
    "rew_end_model": {"lstm_dim": 8, "cond_channels": 8, "depths": [1, 1], "channels": [8, 8], "attn_depths": [0, 0]},
    "actor_critic": {"lstm_dim": 8, "channels": [8, 8], "down": [1, 1]},
}


def test_resize_frame_any_image_to_rgb():
    grey = np.arange(100, dtype=np.uint8).reshape(10, 10)
    out = resize_frame(grey, 20)  # upscaled by pixel repetition: every cell stays sharp
    assert out.shape == (3, 20, 20) and (out[0] == out[1]).all() and out[0, 0, 0] == out[0, 1, 1] == 0
    np.testing.assert_array_equal(out[0, ::2, ::2], grey)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 200
    assert (resize_frame(rgba, 8)[0] == 200).all() and (resize_frame(rgba, 8)[1:] == 0).all()
    assert resize_frame(np.ones((16, 16, 3), np.float32), 8).max() == 255  # floats in [0, 1]


@pytest.mark.parametrize("size", [32, 64])
def test_gym_env_contract(size):
    env = GymEnv(CATCH, 2, size=size, seed=3)
    assert env.num_actions == 3 and env.pixels == "obs"
    obs = env.reset()
    assert obs.shape == (2, 3, size, size) and obs.dtype == np.uint8
    ends = 0
    for _ in range(30):  # 3 balls of 9 steps: each env ends once, at step 27
        step = env.step(np.array([1, 1]))
        assert step.obs.shape == step.final_obs.shape == (2, 3, size, size)
        for i in np.flatnonzero(step.end):
            ends += 1
            assert not np.array_equal(step.final_obs[i], step.obs[i])  # same-step reset: a new episode starts
        assert not step.trunc.any() and not step.life_loss.any()
    assert ends == 2
    again = GymEnv(CATCH, 2, size=size, seed=3)
    np.testing.assert_array_equal(again.reset(), obs)  # seeded
    with pytest.raises(ValueError, match="actions must lie"):
        env.step(np.array([0, 3]))


def test_render_pixels_and_time_limit():
    env = GymEnv(CATCH, 1, size=32, pixels="render", make_kwargs={"max_episode_steps": 5})
    assert env.pixels == "render"
    env.reset(seed=0)
    steps = [env.step(np.array([1])) for _ in range(5)]
    assert steps[-1].trunc[0] and not steps[-1].end[0] and not any(s.trunc[0] for s in steps[:-1])


@pytest.mark.parametrize("env_id, message", [
    ("pixel_envs:NoImages-v0", "not images"),
    ("pixel_envs:Continuous-v0", "needs a Discrete action space"),
    ("Nope-v0", "gymnasium cannot make it"),
    ("no_such_module:Env-v0", "gymnasium cannot make it"),
])  # fmt: skip
def test_unusable_envs_are_clear_errors(env_id, message):
    with pytest.raises(EnvSpecError, match=message) as e:
        EnvSpec(env_id=env_id).num_actions
    assert env_id in str(e.value)


@pytest.mark.parametrize("size", [32, 64])
def test_agent_follows_the_env(size):
    agent = DiamondAgent(env={"env_id": CATCH, "img_size": size}, **TINY_NETS)
    assert agent.num_actions == 3 and agent.game == CATCH
    assert agent.hparams["env"]["img_size"] == size and agent.hparams["actor_critic"]["img_size"] == size
    frames = torch.zeros(2, 3, size, size)
    logits, value, _ = agent.actor_critic.net(frames, None)
    assert logits.shape == (2, 3) and value.shape == (2,)
    out = agent.rew_end_model(frames[:, None], torch.zeros(2, 1, dtype=torch.long), frames[:, None])
    assert out[0].shape[:2] == (2, 1)
    with pytest.raises(ValueError, match="img_size = 48 but .* has 32"):
        DiamondAgent(env={"env_id": CATCH, "img_size": 32}, actor_critic={**TINY_NETS["actor_critic"], "img_size": 48})


def test_minari_round_trip(tmp_path):
    pytest.importorskip("minari")
    from diamond_pl.data.minari_io import export_minari, import_minari

    rng = np.random.default_rng(0)
    store = EpisodeStore(tmp_path / "run" / "dataset" / "train", "train_dataset")
    for length, finished in ((7, True), (5, True), (4, False)):
        end = np.zeros(length, bool)
        end[-1] = finished
        store.add_episode(Episode(obs=rng.integers(0, 256, (length, 3, 16, 16), dtype=np.uint8),
                                  act=rng.integers(0, 3, length), rew=rng.normal(size=length).astype(np.float32),
                                  end=end, trunc=np.zeros(length, bool),
                                  final_obs=rng.integers(0, 256, (3, 16, 16), dtype=np.uint8) if finished else None))
    summary = export_minari(store.directory, tmp_path / "minari", "test/catch-v0", num_actions=3)
    assert summary["episodes"] == 3 and summary["unfinished_last_steps_dropped"] == 1
    import_minari(tmp_path / "minari" / "test" / "catch-v0", tmp_path / "static", img_size=16, test_episodes=1)
    train = EpisodeStore.import_directory(tmp_path / "static" / "train")
    test = EpisodeStore.import_directory(tmp_path / "static" / "test")
    back = [train.get(0), train.get(1), test.get(0)]
    for i, b in enumerate(back):
        a = store.get(i)
        n = len(b)
        assert n == (len(a) if a.is_finished else len(a) - 1)  # Minari has no observation after the last action
        for k in ("obs", "act", "rew", "end", "trunc"):
            np.testing.assert_array_equal(getattr(a, k)[:n], getattr(b, k), err_msg=k)
        if a.is_finished:
            np.testing.assert_array_equal(a.final_obs, b.final_obs)
        else:
            assert b.final_obs is None


@pytest.mark.filterwarnings("ignore::UserWarning:minari")
def test_minari_refuses_non_image_or_continuous_data(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    from diamond_pl.data.minari_io import MinariError, import_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))

    def make(name, obs_space, act_space, obs, act):
        buf = EpisodeBuffer(id=0, observations=obs, actions=act, rewards=np.zeros(2), terminations=np.array([0, 1], bool),
                            truncations=np.zeros(2, bool))
        minari.create_dataset_from_buffers(name, [buf], observation_space=obs_space, action_space=act_space)
        return tmp_path / "root" / name

    vec = make("vec-v0", gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2), np.zeros((3, 4), np.float32),
               np.zeros(2, np.int64))
    with pytest.raises(MinariError, match="not images"):
        import_minari(vec, tmp_path / "a")
    cont = make("cont-v0", gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), gym.spaces.Box(-1, 1, (1,), np.float32),
                np.zeros((3, 8, 8, 3), np.uint8), np.zeros((2, 1), np.float32))
    with pytest.raises(MinariError, match="Discrete"):
        import_minari(cont, tmp_path / "b")


@pytest.fixture(scope="module")
def catch_run(tmp_path_factory) -> Path:
    """The smoke loop on Catch at 32x32, killed mid-epoch (SIGKILL) and resumed with --ckpt_path last."""
    run = tmp_path_factory.mktemp("catch")
    crash = json.dumps([{"class_path": "crash_callback.SigkillAt", "init_args": {"epoch": 2, "batch": 2}}])
    args = [f"--data.env_id={CATCH}", "--data.img_size=32"]
    killed = fit(run, *args, f"--trainer.callbacks={crash}", check=False)
    assert killed.returncode == -9, killed.stderr[-3000:]
    fit(run, *args, "--ckpt_path=last")
    return run


def test_gym_env_trains_and_resumes(catch_run):
    ckpt = torch.load(catch_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["hyper_parameters"]["env"]["env_id"] == CATCH
    store = EpisodeStore(catch_run / "dataset" / "train")
    store.load_state_dict(ckpt["ReplayDataModule"]["train_store"])
    assert store.num_steps == 400 and store.frame_shape == (3, 32, 32)  # the budget, exactly, after the resume
    assert store.counts_rew[0] > 0 and store.counts_rew[2] > 0  # Catch's +1 and -1 made it into the store
    events = list((catch_run / "logs").rglob("events.out.tfevents.*"))
    assert events  # and no human-normalised score for a non-Atari env (checked below through evaluate)


def test_tools_accept_a_gym_env_checkpoint(catch_run, tmp_path, monkeypatch):
    from diamond_pl.tools import dream, evaluate
    from diamond_pl.tools.checkpoints import load_agent

    ckpt = str(catch_run / "checkpoints" / "last.ckpt")
    agent = load_agent(ckpt)
    assert agent.env_spec.env_id == CATCH and agent.env_spec.img_size == 32
    result = evaluate.evaluate(agent, episodes=2, num_envs=2, seed=0)
    assert result["episodes"] == 2 and result["human_normalised_score"] is None
    assert all(-3 <= r <= 3 for r in result["returns"])  # three balls, +-1 each
    out = tmp_path / "dream.gif"
    summary = dream.dream(dream.parser().parse_args(
        ["--ckpt_path", ckpt, "--horizon", "3", "--out", str(out), "--seed", "0", "--start-step", "4", "--device", "cpu"]))
    assert out.is_file() and len(summary["actions"]) == 3
    from PIL import Image

    from diamond_pl.video import SEPARATOR
    with Image.open(out) as gif:  # default scale: 32 px frames drawn 256 px wide, so their captions fit
        assert gif.width == 2 * 256 + SEPARATOR
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pytest.importorskip("pygame")
    from diamond_pl.tools.play_session import PlaySession

    session = PlaySession(agent, horizon=3, num_steps_initial_collect=20, seed=0)
    try:
        assert session.action_meanings == ["0", "1", "2"]
    finally:
        session.close()


def test_static_dataset_must_fit_the_env(tmp_path):
    from diamond_pl.data.datamodule import ReplayDataModule

    def write(root, actions):
        for split in ("train", "test"):
            store = EpisodeStore(root / split, split)
            store.add_episode(Episode(obs=np.zeros((4, 3, 32, 32), np.uint8), act=np.array(actions),
                                      rew=np.zeros(4, np.float32), end=np.zeros(4, bool), trunc=np.zeros(4, bool)))
        return str(root)

    fits = write(tmp_path / "a", [0, 1, 2, 2])
    ReplayDataModule(static_dataset=fits, env_id=CATCH, img_size=32).setup()  # no error
    with pytest.raises(ValueError, match=r"frames are \(3, 32, 32\) but data.img_size is 64; pass --data.img_size 32"):
        ReplayDataModule(static_dataset=fits, env_id=CATCH, img_size=64).setup()
    too_many = write(tmp_path / "b", [0, 1, 5, 2])
    with pytest.raises(ValueError, match="holds action 5 but pixel_envs:Catch-v0 has 3 actions"):
        ReplayDataModule(static_dataset=too_many, env_id=CATCH, img_size=32).setup()
