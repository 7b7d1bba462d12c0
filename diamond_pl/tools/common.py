"""What every researcher tool does first: parse the shared options, pick a device, load the agent, check an optional
config against it.

Errors a user can fix (missing file, wrong game, bad option) are raised as `ToolError` with the fix in the message;
`run_tool` turns them into `<command>: error: ...` on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from diamond_pl.errors import UsageError, run_command
from diamond_pl.games import NUM_ACTIONS, UnknownGameError, validate_game
from diamond_pl.tools.checkpoints import CheckpointError, load_agent

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
    run_command(command, fn)


def pick_device(name: str | None) -> torch.device:
    """`cpu`, `cuda`, `cuda:1`, or None/`auto` = the GPU when there is one."""
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
    path = Path(ckpt_path)
    if not path.exists():
        raise ToolError(f"--ckpt_path {path}: no such file (a diamond_pl .ckpt from `fit`/`import-diamond`, "
                        f"or a DIAMOND agent .pt)")
    agent = load_agent(path, map_location=device)
    agent = agent.to(device).eval()
    if config is not None:
        check_config(config, agent.game, path)
    return agent


def check_config(config: str | os.PathLike, ckpt_game: str, ckpt_path: str | os.PathLike) -> None:
    """Refuse a config whose game or action counts disagree with the checkpoint's agent."""
    import yaml

    path = Path(config)
    if not path.is_file():
        raise ToolError(f"--config {path}: no such file")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ToolError(f"--config {path}: not valid YAML ({e})") from None
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    named = data.get("game") or model.get("game")
    try:
        game = validate_game(named) if named else DEFAULT_GAME
    except UnknownGameError as e:
        raise ToolError(f"--config {path}: {e}") from None
    source = "" if named else " (its default: the config names no data.game)"
    ckpt_actions = NUM_ACTIONS[ckpt_game]
    if game != ckpt_game:
        raise ToolError(
            f"config {path} is for {game}{source} ({NUM_ACTIONS[game]} actions) but checkpoint {ckpt_path} holds a "
            f"{ckpt_game} agent ({ckpt_actions} actions); pass the config of the run that wrote the checkpoint, or "
            f"leave --config out (the checkpoint alone rebuilds the agent)"
        )
    for part in ("denoiser", "rew_end_model", "actor_critic"):
        n = (model.get(part) or {}).get("num_actions")
        if n is not None and int(n) != ckpt_actions:
            raise ToolError(
                f"config {path} sets model.{part}.num_actions = {n} but checkpoint {ckpt_path} holds a {ckpt_game} "
                f"agent with {ckpt_actions} actions"
            )


