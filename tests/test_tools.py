"""The researcher tools on a tiny trained run: evaluate (JSON, HNS), dream (GIF frames and size), clear errors."""

import json
from pathlib import Path

import pytest
from PIL import Image

from diamond_pl import cli
from diamond_pl.games import human_normalised_score
from diamond_pl.tools import dream, evaluate, play
from diamond_pl.envs.spec import EnvSpec
from diamond_pl.tools.common import ToolError, check_config
from diamond_pl.video import SEPARATOR

ROOT = Path(__file__).resolve().parents[1]


def ckpt(run: Path) -> str:
    return str(run / "checkpoints" / "last.ckpt")


def test_cli_lists_the_tools(capsys):
    cli.main(["--help"])
    out = capsys.readouterr().out
    for name in ("evaluate", "dream", "play"):
        assert name in out


def test_evaluate_writes_json_with_hns(smoke_run, tmp_path, capsys):
    out = tmp_path / "sub" / "eval.json"
    evaluate.main(["--ckpt_path", ckpt(smoke_run), "--episodes", "2", "--num_envs", "2", "--seed", "0",
                   "--json", str(out), "--device", "cpu", "--quiet"])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["game"] == "Breakout" and result["episodes"] == 2
    assert len(result["returns"]) == len(result["lengths"]) == 2
    assert result["return_mean"] == pytest.approx(sum(result["returns"]) / 2)
    assert result["return_min"] <= result["return_mean"] <= result["return_max"]
    assert result["human_normalised_score"] == pytest.approx(human_normalised_score("Breakout", result["return_mean"]))
    assert result["settings"]["epsilon"] == 0.0 and result["settings"]["done_on_life_loss"] is False
    assert not list(out.parent.glob(".*.tmp"))  # atomic write leaves no temp file
    printed = capsys.readouterr().out
    assert "human-normalised" in printed and "return mean" in printed


def test_evaluate_is_reproducible_with_a_seed(smoke_run):
    from diamond_pl.tools.checkpoints import load_agent

    agent = load_agent(ckpt(smoke_run))
    a = evaluate.evaluate(agent, episodes=1, num_envs=1, seed=3)
    b = evaluate.evaluate(agent, episodes=1, num_envs=1, seed=3)
    assert a["returns"] == b["returns"] and a["lengths"] == b["lengths"]


def test_config_must_match_the_checkpoint(smoke_run, tmp_path, capsys):
    check_config(ROOT / "configs" / "smoke.yaml", EnvSpec(game="Breakout"), "x.ckpt")  # the run's own config passes
    pong = tmp_path / "pong.yaml"
    pong.write_text("data:\n  game: Pong\n")
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--ckpt_path", ckpt(smoke_run), "--config", str(pong), "--episodes", "1", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Pong" in err and "Breakout" in err and "pong.yaml" in err and "last.ckpt" in err
    wrong_actions = tmp_path / "actions.yaml"
    wrong_actions.write_text("data: {game: Breakout}\nmodel: {actor_critic: {num_actions: 6}}\n")
    with pytest.raises(ToolError, match="num_actions = 6.*4 actions"):
        check_config(wrong_actions, EnvSpec(game="Breakout"), "x.ckpt")


@pytest.mark.parametrize("tool", [evaluate, dream, play])
def test_missing_checkpoint_is_a_clear_error(tool, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    with pytest.raises(SystemExit) as e:
        tool.main(["--ckpt_path", str(tmp_path / "nope.ckpt")])
    err = capsys.readouterr().err
    if tool is play and "needs pygame" in err:
        pytest.skip("pygame is not installed: play stops at its install hint first")
    assert e.value.code == 2 and "nope.ckpt" in err and "no such file" in err


@pytest.mark.parametrize("tool", [evaluate, dream, play])
def test_unknown_option_is_refused(tool, capsys):
    with pytest.raises(SystemExit) as e:
        tool.main(["--ckpt_path", "x.ckpt", "--no-such-option"])
    assert e.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_dream_writes_side_by_side_gif_and_trajectory(smoke_run, tmp_path):
    out, strip = tmp_path / "rollout.gif", tmp_path / "traj.png"
    args = dream.parser().parse_args([
        "--ckpt_path", ckpt(smoke_run), "--horizon", "4", "--out", str(out), "--seed", "0", "--scale", "2",
        "--start-step", "5", "--denoising-trajectory", str(strip), "--device", "cpu",
    ])  # fmt: skip
    summary = dream.dream(args)
    with Image.open(out) as gif:
        assert gif.n_frames == 4 + 1  # the real start frame, then one frame per imagined step
        assert gif.width == 2 * 64 * 2 + SEPARATOR  # imagined | real
    assert summary["driven_by"] == "policy" and len(summary["actions"]) == 4
    num_sampler_steps = 3  # smoke config
    with Image.open(strip) as png:  # noise, one frame per sampler step, then the real frame
        assert png.width == (num_sampler_steps + 2) * 128 + (num_sampler_steps + 1) * SEPARATOR


def test_dream_with_given_actions_and_from_recorded_data(smoke_run, tmp_path, capsys):
    summary = dream.dream(dream.parser().parse_args([
        "--ckpt_path", ckpt(smoke_run), "--horizon", "3", "--out", str(tmp_path / "a.gif"), "--actions", "FIRE,0",
        "--start-step", "3", "--seed", "1",
    ]))  # fmt: skip
    assert summary["actions"] == [1, 0, 1] and summary["driven_by"] == "--actions"

    data = str(smoke_run / "dataset" / "test")
    summary = dream.dream(dream.parser().parse_args([
        "--ckpt_path", ckpt(smoke_run), "--horizon", "3", "--out", str(tmp_path / "b.gif"), "--data-dir", data,
    ]))  # fmt: skip
    assert summary["driven_by"] == "recorded actions" and summary["num_frames"] == 4

    with pytest.raises(SystemExit):
        dream.main(["--ckpt_path", ckpt(smoke_run), "--data-dir", data, "--policy"])
    assert "recorded actions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        dream.main(["--ckpt_path", ckpt(smoke_run), "--actions", "JUMP"])
    assert "unknown action 'JUMP'" in capsys.readouterr().err


def test_parse_actions():
    meanings = ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert dream.parse_actions("0, fire,RIGHT,3", meanings) == [0, 1, 2, 3]
    with pytest.raises(ToolError, match="out of range"):
        dream.parse_actions("4", meanings)
    with pytest.raises(ToolError, match="empty"):
        dream.parse_actions(" , ", meanings)


def test_mp4_without_imageio_ffmpeg_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "imageio_ffmpeg", None)  # as if not installed
    with pytest.raises(SystemExit) as e:
        dream.main(["--ckpt_path", str(tmp_path / "any.ckpt"), "--out", str(tmp_path / "x.mp4")])
    assert e.value.code == 2 and "pip install imageio-ffmpeg" in capsys.readouterr().err
