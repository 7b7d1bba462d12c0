"""Checks that answer a typo in about a second: run by `diamond_pl.cli` before a command's module is imported.

Importing torch, Lightning and the emulator takes seconds (tens on a busy machine); a misspelt game, a missing
checkpoint or a missing config file should not wait for them. This module imports only the standard library, PyYAML
(light, and already needed by jsonargparse) and `diamond_pl.games` (a table). It reads the few options it checks
straight from argv; everything else is left to the command's own parser, which still validates everything in depth.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from diamond_pl.games import ATARI_100K_GAMES, UnknownGameError, validate_game

# `--ckpt_path` values that Lightning resolves itself (not file names)
CKPT_KEYWORDS = ("last", "best", "hpc", "registry")
NULLS = ("null", "none", "")


class PreflightError(ValueError):
    """A usage error found before any heavy import; the message is one line that says what to fix."""


def option_values(argv: list[str], *names: str) -> list[str]:
    """Every value given to one of `names` (`--name value` or `--name=value`), in order; stops at `--`."""
    values, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        for name in names:
            if arg == name and i + 1 < len(argv):
                values.append(argv[i + 1])
                i += 1
                break
            if arg.startswith(name + "="):
                values.append(arg[len(name) + 1 :])
                break
        i += 1
    return values


def wants_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv[: argv.index("--") if "--" in argv else len(argv)])


def check_file(option: str, value: str, what: str) -> None:
    path = Path(os.path.expanduser(value))
    if not path.exists():
        raise PreflightError(f"{option} {value}: no such file ({what})")
    if path.is_dir():
        raise PreflightError(f"{option} {value}: is a folder, not a file ({what})")


def _config_data_section(path: str) -> dict:
    """The `data:` section of a YAML config ({} when absent or not a mapping); a YAML syntax error is a usage error."""
    import yaml

    try:
        with open(os.path.expanduser(path)) as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise PreflightError(f"--config {path}: not valid YAML ({' '.join(str(e).split())})") from None
    data = cfg.get("data") if isinstance(cfg, dict) else None
    if isinstance(data, dict) and isinstance(data.get("init_args"), dict):  # `data: {class_path:, init_args:}` form
        data = data["init_args"]
    return data if isinstance(data, dict) else {}


def check_game(option: str, game: str) -> None:
    try:
        validate_game(game)
    except UnknownGameError as e:
        close = difflib.get_close_matches(game.lower(), [g.lower() for g in ATARI_100K_GAMES], n=1)
        hint = f" Did you mean {next(g for g in ATARI_100K_GAMES if g.lower() == close[0])}?" if close else ""
        raise PreflightError(f"{option}: {e}{hint}") from None


def check_fit(argv: list[str]) -> None:
    """`fit`: config files exist, the game is one of the 26 (unless an env id is given), the checkpoint exists."""
    configs = option_values(argv, "--config", "-c")
    for value in configs:
        check_file("--config", value, "a YAML config, e.g. configs/breakout.yaml")
    # later values win, as in jsonargparse: configs in order, then the command line
    game, env_id = None, None
    for value in configs:
        data = _config_data_section(value)
        game = data.get("game", game)
        env_id = data.get("env_id", env_id)
    game = (option_values(argv, "--data.game") or [game])[-1]
    env_id = (option_values(argv, "--data.env_id") or [env_id])[-1]
    has_env_id = env_id is not None and str(env_id).strip().lower() not in NULLS
    if not has_env_id and isinstance(game, str) and game.strip().lower() not in NULLS:
        check_game("--data.game", game)  # an env id (any gymnasium env) is checked later, by gymnasium
    for value in option_values(argv, "--ckpt_path"):
        if value not in CKPT_KEYWORDS and value.strip().lower() not in NULLS:
            check_file("--ckpt_path", value, "a full checkpoint from `fit`, or `last` to resume the run's newest")


def check_tool(argv: list[str]) -> None:
    """evaluate / dream / play / benchmark: the checkpoint and config files exist, a given game is known."""
    for value in option_values(argv, "--ckpt_path", "--ckpt-path"):
        check_file("--ckpt_path", value, "a diamond_pl .ckpt from `fit`/`import-diamond`, or a DIAMOND agent .pt")
    for value in option_values(argv, "--config"):
        check_file("--config", value, "a YAML config, e.g. configs/breakout.yaml")
    for value in option_values(argv, "--game"):
        check_game("--game", value)


CHECKS = {"fit": check_fit, "evaluate": check_tool, "dream": check_tool, "play": check_tool,
          "benchmark": check_tool, "import-diamond": check_tool}  # fmt: skip


def check(command: str, argv: list[str]) -> None:
    """Raise PreflightError on a usage error that needs no heavy import to see; `--help` is never checked."""
    if wants_help(argv) or command not in CHECKS:
        return
    CHECKS[command](argv)
