"""Loading a trained agent from a file, whatever wrote it: `load_agent(path)`.

Two formats are accepted:
  * a diamond_pl checkpoint (Lightning's dict with `state_dict` and `hyper_parameters`), from `fit` or from
    `import-diamond`; loaded by `DiamondAgent.load_from_checkpoint`;
  * a reference DIAMOND agent state dict (`tools/reference_format.py`), converted on the fly: the architecture is
    inferred from the tensor shapes and the game from `game` (or from the action count where that names one game).

Everything is read with `torch.load(weights_only=True)`: no file can run code on load. `save_checkpoint` writes a
Lightning-style checkpoint atomically, so an interrupted conversion never leaves a half-written file.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import lightning
import torch

from diamond_pl.agent import DiamondAgent
from diamond_pl.atomic import atomic_write
from diamond_pl.games import NUM_ACTIONS, UnknownGameError, validate_game
from diamond_pl.tools.reference_format import (
    FIX_FILE,
    CheckpointError,
    check_components,
    infer_architecture,
    some_keys,
    to_agent_key,
    to_reference_key,
)

__all__ = ["CheckpointError", "agent_from_reference", "load_agent", "read_torch_file", "resolve_game", "save_checkpoint"]


def read_torch_file(path: str | os.PathLike) -> object:
    """torch.load(weights_only=True) onto the CPU (published files may hold CUDA tensors), with readable errors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; check the path (a DIAMOND agent .pt or a diamond_pl .ckpt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file; pass the checkpoint file itself, not its directory")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # torch bolds part of it with terminal codes
        first_line = text.splitlines()[0].strip() if text else type(e).__name__
        if "weights only" in first_line.lower():
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors and plain containers, which diamond_pl never "
                f"unpickles ({first_line}); load it in a trusted session and re-save only the weights with "
                f"torch.save(agent.state_dict(), path)"
            ) from e
        raise _corrupt(path, e) from e
    except Exception as e:  # zip errors, truncation, garbage: torch raises many types
        raise _corrupt(path, e) from e


def _corrupt(path: Path, e: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path}: cannot be read as a torch file ({type(e).__name__}: {str(e).strip().split('. ')[0][:200]}); it is corrupt, "
        f"truncated or not written by torch.save: download or copy it again"
    )


def is_lightning_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict)


def resolve_game(num_actions: int, game: str | None, source: str) -> str:
    """The game to build the agent for: `game` if its action count matches the weights', else the only game with that
    action count."""
    same = [g for g, a in NUM_ACTIONS.items() if a == num_actions]
    if game is None:
        if len(same) == 1:
            return same[0]
        if not same:
            raise CheckpointError(
                f"{source}: the weights have {num_actions} actions, which no Atari-100k game has "
                f"(action counts: {sorted(set(NUM_ACTIONS.values()))})"
            )
        raise CheckpointError(
            f"{source}: the weights have {num_actions} actions, which several games have ({', '.join(same)}); "
            f"name the game the agent was trained on with --game"
        )
    try:
        game = validate_game(game)
    except UnknownGameError as e:
        raise CheckpointError(str(e)) from e
    if NUM_ACTIONS[game] != num_actions:
        hint = f"games with {num_actions} actions: {', '.join(same)}" if same else "no game has that many"
        raise CheckpointError(
            f"{source}: --game {game} has {NUM_ACTIONS[game]} actions but the weights have {num_actions} ({hint}); "
            f"pass the game the agent was trained on"
        )
    return game


def agent_from_reference(state_dict: dict, game: str | None = None, source: str = "state dict") -> DiamondAgent:
    """A DiamondAgent with the architecture inferred from a reference agent state dict and its weights loaded."""
    check_components(state_dict, source)
    arch = infer_architecture(state_dict, source)
    game = resolve_game(arch.num_actions, game, source)
    try:
        agent = DiamondAgent({"game": game}, denoiser=arch.denoiser, rew_end_model=arch.rew_end_model,
                             actor_critic=arch.actor_critic)  # fmt: skip
    except (AssertionError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{source}: the inferred architecture {arch} cannot be built ({e}); {FIX_FILE}") from e

    expected = agent.state_dict()
    mapped = {to_agent_key(k): v for k, v in state_dict.items()}
    # only the three networks come from the file; anything else the agent holds keeps its initial value
    missing = [to_reference_key(k) for k in expected if to_reference_key(k) is not None and k not in mapped]
    unknown = [k for k in state_dict if to_agent_key(k) not in expected]
    mismatched = [
        f"{k} {list(v.shape)} (expected {list(expected[to_agent_key(k)].shape)})"
        for k, v in state_dict.items()
        if to_agent_key(k) in expected and v.shape != expected[to_agent_key(k)].shape
    ]
    problems = [f"missing keys {some_keys(missing)}"] if missing else []
    problems += [f"unknown keys {some_keys(unknown)}"] if unknown else []
    problems += [f"inconsistent shapes {some_keys(mismatched, quote=False)}"] if mismatched else []
    if problems:
        raise CheckpointError(
            f"{source}: does not fit the architecture inferred from its own tensor shapes ({'; '.join(problems)}); "
            f"the file is incomplete, edited, or from a DIAMOND version with other layer names: {FIX_FILE}"
        )
    agent.load_state_dict({**expected, **mapped}, strict=True)
    return agent.eval()


def save_checkpoint(agent: DiamondAgent, path: str | os.PathLike, provenance: dict) -> None:
    """Write a checkpoint that `DiamondAgent.load_from_checkpoint(path, weights_only=True)` loads (temp + rename)."""
    checkpoint = {
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in agent.state_dict().items()},
        "hyper_parameters": dict(agent.hparams),
        "pytorch-lightning_version": lightning.__version__,  # Lightning's checkpoint migration reads it
        "diamond_pl": dict(provenance),
    }
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def load_agent(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", game: str | None = None
) -> DiamondAgent:
    """A DiamondAgent in eval mode on `map_location`, from a diamond_pl checkpoint or a reference DIAMOND agent .pt.

    `game` is needed only for a reference file whose action count several games share; when given, it must match.
    """
    obj = read_torch_file(path)
    source = str(path)
    if is_lightning_checkpoint(obj):
        if "hyper_parameters" not in obj:
            raise CheckpointError(
                f"{source}: a Lightning checkpoint without hyper_parameters, so the architecture is unknown; it was "
                f"not written by diamond_pl (use a checkpoint from `fit` or `import-diamond`)"
            )
        try:
            agent = DiamondAgent.load_from_checkpoint(path, map_location=map_location, weights_only=True)
        except (RuntimeError, TypeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"{source}: a Lightning checkpoint that does not fit DiamondAgent ({type(e).__name__}: "
                f"{str(e).strip()[:500]}); was it written by another project or an incompatible diamond_pl version?"
            ) from e
        if game is not None and (not agent.env_spec.is_atari or validate_game(game) != agent.game):
            raise CheckpointError(f"{source}: the checkpoint's agent plays {agent.game}, not {validate_game(game)}")
        return agent.eval()
    return agent_from_reference(obj, game, source).to(map_location)
