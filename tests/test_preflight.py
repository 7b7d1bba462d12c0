"""A typo is answered before any heavy import (torch, Lightning, the emulator), and --help never imports torch.

Each case runs in a fresh interpreter and reports which heavy modules were loaded when the command stopped: no
emulator can have started if gymnasium and ale_py were never imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diamond_pl.cli import COMMANDS
from diamond_pl.preflight import PreflightError, check, option_values

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
HEAVY = ("torch", "lightning", "gymnasium", "ale_py")

PROBE = """
import json, sys
from diamond_pl.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def probe(*argv: str, cwd=None) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, whatever the editable install points at
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"fit"}))  # fit's help is LightningCLI's, built from the classes
def test_help_does_not_import_torch(command):
    result, err = probe(command, "--help")
    assert result == {"code": 0, "loaded": []}, err[-2000:]


@pytest.mark.parametrize("argv, message", [
    (["fit", "--config", SMOKE, "--data.game", "Pongg"], "Unknown game 'Pongg'"),
    (["fit", "--config", SMOKE, "--data.game=Pongg"], "Did you mean Pong?"),
    (["fit", "--config", SMOKE, "--ckpt_path", "nope.ckpt"], "--ckpt_path nope.ckpt: no such file"),
    (["fit", "--config", "nope.yaml"], "--config nope.yaml: no such file"),
    (["evaluate", "--ckpt_path", "nope.ckpt"], "--ckpt_path nope.ckpt: no such file"),
    (["dream", "--ckpt-path=nope.ckpt"], "--ckpt_path nope.ckpt: no such file"),
    (["play", "-d", "x", "--game", "Breakuot"], "Unknown game 'Breakuot'"),
])  # fmt: skip
def test_typos_stop_before_any_heavy_import(argv, message, tmp_path):
    result, err = probe(*argv, cwd=tmp_path)
    assert result == {"code": 2, "loaded": []}, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{argv[0]}: error: ") and message in lines[0], err


def test_game_in_a_config_file_is_checked(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  game: Pongg\n")
    with pytest.raises(PreflightError, match="Pongg"):
        check("fit", ["--config", str(cfg)])
    check("fit", ["--config", str(cfg), "--data.game", "Pong"])  # the command line wins
    check("fit", ["--config", str(cfg), "--data.env_id", "CartPole-v1"])  # env ids are checked later, by gymnasium
    cfg.write_text("data:\n  game: Pongg\n  env_id: mypkg.envs:Maze-v0\n")
    check("fit", ["--config", str(cfg)])


def test_checkpoint_keywords_and_help_are_not_checked(tmp_path):
    for keyword in ("last", "best", "hpc", "registry"):
        check("fit", ["--ckpt_path", keyword])
    check("fit", ["--config", str(tmp_path / "nope.yaml"), "--help"])


def test_option_values():
    argv = ["--config", "a.yaml", "--config=b.yaml", "--data.game", "Pong", "--", "--config", "c.yaml"]
    assert option_values(argv, "--config") == ["a.yaml", "b.yaml"]
    assert option_values(argv, "--data.game") == ["Pong"]
    assert option_values(["--data.game"], "--data.game") == []
