"""`python -m diamond_pl import-diamond AGENT.pt --out OUT.ckpt [--game Breakout]`

Converts a reference DIAMOND agent state dict (a training run's `checkpoints/agent_versions/agent_epoch_XXXXX.pt` or
a released `<Game>.pt`) into a diamond_pl checkpoint that `DiamondAgent.load_from_checkpoint(OUT, weights_only=True)`
loads, and that evaluate / dream / play accept. Every network size is inferred from the tensor shapes (assumptions in
`tools/reference_format.py`); non-weight settings (sampler, losses, optimisers) keep diamond_pl's defaults, which are
DIAMOND's Atari values.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

# the converter (torch, Lightning) is imported in convert() and main(): `import-diamond --help` must not wait for it


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m diamond_pl import-diamond",
        description="Convert a reference DIAMOND agent state dict (.pt) into a diamond_pl checkpoint (.ckpt).",
    )
    p.add_argument("agent", type=Path, help="the reference agent state dict, e.g. agent_epoch_01000.pt or Breakout.pt")
    p.add_argument("--out", type=Path, required=True, help="where to write the diamond_pl checkpoint")
    p.add_argument(
        "--game", default=None,
        help="the Atari-100k game the agent plays; may be left out when its action count names one game only",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p


def convert(agent_path: Path, out: Path, game: str | None = None, overwrite: bool = False) -> dict:
    """Convert and write; returns a summary (game, inferred configs, parameter count)."""
    from diamond_pl.tools.checkpoints import (
        CheckpointError,
        agent_from_reference,
        is_lightning_checkpoint,
        read_torch_file,
        save_checkpoint,
    )
    from diamond_pl.modules.component import COMPONENTS
    from diamond_pl.tools.reference_format import FORMAT

    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: exists already; pass --overwrite to replace it, or choose another --out")
    if out.resolve() == agent_path.resolve():
        raise CheckpointError(f"{out}: --out must differ from the input file")
    state_dict = read_torch_file(agent_path)
    if is_lightning_checkpoint(state_dict):
        raise CheckpointError(
            f"{agent_path}: is already a Lightning/diamond_pl checkpoint; use it directly (no conversion needed)"
        )
    agent = agent_from_reference(state_dict, game, str(agent_path))
    provenance = {"imported_from": str(agent_path.resolve()), "format": FORMAT, "sha256": _sha256(agent_path)}
    save_checkpoint(agent, out, provenance)
    return {
        "game": agent.game,
        "num_actions": agent.num_actions,
        **{name: dict(agent.hparams[name]) for name in COMPONENTS},
        "num_parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in agent.components.items()},
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    from diamond_pl.modules.component import COMPONENTS

    summary = convert(args.agent, args.out, args.game, args.overwrite)  # CheckpointError: one line, exit 2 (cli)
    print(f"{args.agent} -> {args.out} ({summary['game']}, {summary['num_actions']} actions)")
    for name in COMPONENTS:
        cfg = {k: v for k, v in summary[name].items() if k != "num_actions"}
        print(f"  {name}: {summary['num_parameters'][name]:,} parameters, {cfg}")
    print("Load it with DiamondAgent.load_from_checkpoint(path, weights_only=True) or diamond_pl.tools.checkpoints.load_agent.")
    sys.stdout.flush()
