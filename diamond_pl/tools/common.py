"""What every researcher tool does first: parse the shared options, pick a device, load the agent, check an optional
config against it.

Errors a user can fix (missing file, wrong game, bad option) are raised as `ToolError` with the fix in the message;
`run_tool` turns them into `<command>: error: ...` on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from diamond_pl.games import UnknownGameError, validate_game
from diamond_pl.errors import UsageError, run_command

if TYPE_CHECKING:
    import torch
# torch and the checkpoint loader are imported inside the functions that use them: `<tool> --help` and the parsers
# must not wait seconds for torch (tests/test_cli.py checks sys.modules after --help)

DEFAULT_GAME = "Breakout"  # what a config without `data.game` trains (ReplayDataModule's default)


class ToolError(UsageError):
    """A problem the user can fix; the message says what and how (exit status 2, see diamond_pl/errors.py)."""


def tool_parser(command: str, description: str, seeds: str, ckpt_required: bool = True) -> argparse.ArgumentParser:
    """The options every checkpoint tool (evaluate, dream, play) shares; `seeds` says what --seed seeds."""
    p = argparse.ArgumentParser(prog=f"python -m diamond_pl {command}", description=description)
    p.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", required=ckpt_required,
                   help="diamond_pl checkpoint (.ckpt) or DIAMOND agent (.pt)")
    p.add_argument("--seed", type=int, default=None, help=f"seeds {seeds} (default: random)")
    p.add_argument("--temperature", type=float, default=None, help="actor temperature (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    return p


def run_tool(command: str, fn: Callable[[], object]) -> None:
    """Run a tool's body; user errors become one clear line on stderr and exit status 2 (`errors.run_command`)."""
    from diamond_pl.video import VideoFormatError

    def body() -> None:
        try:
            fn()
        except VideoFormatError as e:  # a wrong --out suffix is a usage error too
            raise ToolError(str(e)) from None

    run_command(command, body)


def pick_device(name: str | None) -> torch.device:
    """`cpu`, `cuda`, `cuda:1`, or None/`auto` = the GPU when there is one."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ToolError(f"--device {name!r} is not a torch device ({e}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ToolError(f"--device {name}: this torch has no usable CUDA device; use --device cpu")
    return device


def load_tool_agent(ckpt_path: str | os.PathLike, device: torch.device, config: str | os.PathLike | None = None):
    """The agent of a diamond_pl checkpoint (or a reference DIAMOND .pt) in eval mode on `device`.

    With `config`, the YAML's game and action counts must agree with the checkpoint's."""
    from diamond_pl.tools.checkpoints import load_agent

    path = Path(ckpt_path)
    if not path.exists():
        raise ToolError(f"--ckpt_path {path}: no such file (a diamond_pl .ckpt from `fit`/`import-diamond`, "
                        f"or a DIAMOND agent .pt)")
    agent = load_agent(path, map_location=device)
    agent = agent.to(device).eval()
    if config is not None:
        check_config(config, agent.env_spec, path)
    return agent


def check_config(config: str | os.PathLike, ckpt_env, ckpt_path: str | os.PathLike) -> None:
    """Refuse a config whose env (game or env id, frame size) or action counts disagree with the checkpoint's agent
    (`ckpt_env`: its EnvSpec)."""
    import yaml

    from diamond_pl.modules.component import COMPONENTS

    path = Path(config)
    if not path.is_file():
        raise ToolError(f"--config {path}: no such file")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ToolError(f"--config {path}: not valid YAML ({e})") from None
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    named = data.get("env_id") or data.get("game") or model.get("game")
    try:
        env = data["env_id"] if data.get("env_id") else validate_game(named or DEFAULT_GAME)
    except UnknownGameError as e:
        raise ToolError(f"--config {path}: {e}") from None
    source = "" if named else " (its default: the config names no data.game)"
    if env != ckpt_env.name:
        raise ToolError(
            f"config {path} is for {env}{source} but checkpoint {ckpt_path} holds a {ckpt_env.name} agent "
            f"({ckpt_env.num_actions} actions); pass the config of the run that wrote the checkpoint, or leave "
            f"--config out (the checkpoint alone rebuilds the agent)"
        )
    size = data.get("img_size")
    if size is not None and int(size) != ckpt_env.img_size:
        raise ToolError(f"config {path} sets data.img_size = {size} but checkpoint {ckpt_path} holds an agent for "
                        f"{ckpt_env.img_size}x{ckpt_env.img_size} frames")
    for part in COMPONENTS:
        n = (model.get(part) or {}).get("num_actions")
        if n is not None and int(n) != ckpt_env.num_actions:
            raise ToolError(
                f"config {path} sets model.{part}.num_actions = {n} but checkpoint {ckpt_path} holds a "
                f"{ckpt_env.name} agent with {ckpt_env.num_actions} actions"
            )
