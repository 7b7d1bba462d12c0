"""`python -m diamond_pl evaluate --ckpt_path PATH [--episodes 100] [--num_envs 8] [--json OUT.json] ...`

Scores a trained agent the way the paper does (reference spec §10): full test games (no life-loss termination,
1..30 random no-ops at reset, ALE's 108k-frame truncation), actions sampled from the actor with its temperature,
epsilon 0 unless asked. Episodes run in parallel envs with the training loop's `Collector`; each env plays a fixed share
of the episodes so that short games are not over-represented. Prints the return statistics and the human-normalised
score; `--json` writes them (and every episode's return and length) atomically.

The checkpoint alone rebuilds the agent and names the game; `--config` is only checked against it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from diamond_pl.atomic import atomic_write_bytes
from diamond_pl.tools.common import ToolError, load_tool_agent, pick_device, run_tool, tool_parser

COMMAND = "evaluate"


def parser() -> argparse.ArgumentParser:
    p = tool_parser(
        COMMAND,
        "Play full test games with a trained agent and report returns and the human-normalised score.",
        seeds="env resets and action sampling",
    )  # fmt: skip
    p.add_argument("--config", default=None, help="the run's YAML; only checked against the checkpoint's game")
    p.add_argument("--episodes", type=int, default=100, help="test episodes (paper: 100)")
    p.add_argument("--num_envs", type=int, default=8, help="games played in parallel")
    p.add_argument("--epsilon", type=float, default=0.0, help="probability of a random action per step (paper: 0)")
    p.add_argument("--noop_max", type=int, default=30, help="random no-ops at reset are drawn in 1..noop_max")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class _ScoreSink:
    """Stands in for the Collector's EpisodeStore: keeps returns and lengths, never frames (100 full games would
    be gigabytes), and advances a progress callback per finished episode."""

    def __init__(self, on_episode=None) -> None:
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.on_episode = on_episode

    def add_episode(self, episode, episode_id=None) -> int:
        if not episode.is_finished:
            raise RuntimeError("evaluation stores only finished episodes")  # test collectors never save partial ones
        self.returns.append(episode.ret)
        self.lengths.append(episode.length)
        if self.on_episode is not None:
            self.on_episode(episode)
        return len(self.returns) - 1

    def get(self, episode_id):
        raise RuntimeError("evaluation never extends a stored episode")


def evaluate(agent, episodes: int, num_envs: int = 8, epsilon: float = 0.0, temperature: float | None = None,
             noop_max: int = 30, seed: int | None = None, on_episode=None) -> dict:
    """Play `episodes` full test games; returns the summary dict written by `--json`."""
    import torch  # here, not at the top: `evaluate --help` must not wait for torch or the emulator

    from diamond_pl.data.collector import Collector
    from diamond_pl.modules.actor_critic import ActorCriticPolicy

    if episodes < 1:
        raise ToolError(f"--episodes must be >= 1, got {episodes}")
    if num_envs < 1:
        raise ToolError(f"--num_envs must be >= 1, got {num_envs}")
    if not 0.0 <= epsilon <= 1.0:
        raise ToolError(f"--epsilon must be in [0, 1], got {epsilon}")
    if temperature is not None and temperature <= 0:
        raise ToolError(f"--temperature must be > 0, got {temperature}")
    if noop_max < 0:
        raise ToolError(f"--noop_max must be >= 0, got {noop_max}")
    temperature = agent.actor_critic.loss_cfg.temperature if temperature is None else temperature
    num_envs = min(num_envs, episodes)  # more envs than episodes would only play discarded games
    if seed is not None:
        torch.manual_seed(seed)  # the actor samples its actions from torch's global generator
    sink = _ScoreSink(on_episode)
    env = agent.env_spec.make(num_envs, train=False, noop_max=noop_max, seed=seed)
    start = time.perf_counter()
    try:
        policy = ActorCriticPolicy(agent.actor_critic.net, temperature)
        collector = Collector(env, sink, policy, epsilon, reset_every_collect=True, seed=seed)
        with torch.no_grad():
            collector.collect(num_episodes=episodes)
    finally:
        env.close()
    returns = np.array(sink.returns, dtype=np.float64)
    mean = float(returns.mean())
    return {
        "game": agent.game,
        "episodes": len(returns),
        "return_mean": mean,
        "return_std": float(returns.std()),  # population std, as the reference reports it
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "length_mean": float(np.mean(sink.lengths)),
        "human_normalised_score": agent.env_spec.normalised_score(mean),  # None outside Atari
        "returns": [float(r) for r in sink.returns],
        "lengths": [int(n) for n in sink.lengths],
        "settings": {"num_envs": num_envs, "epsilon": epsilon, "temperature": temperature, "noop_max": noop_max,
                     "seed": seed, "done_on_life_loss": False},
        "env_steps": int(np.sum(sink.lengths)),
        "seconds": time.perf_counter() - start,
    }


def _print_table(result: dict, ckpt: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['game']}: {result['episodes']} test episodes ({ckpt})")
    for col in ("return mean", "std", "min", "max", "length mean", "human-normalised"):
        table.add_column(col, justify="right")
    stats = ("return_mean", "return_std", "return_min", "return_max", "length_mean")
    hns = result["human_normalised_score"]
    table.add_row(*(f"{result[k]:.2f}" for k in stats), "-" if hns is None else f"{hns:.3f}")
    Console().print(table)


def run(args: argparse.Namespace) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    device = pick_device(args.device)
    agent = load_tool_agent(args.ckpt_path, device, args.config)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("last return {task.fields[last]}"), disable=args.quiet) as progress:
        task = progress.add_task(f"{agent.game} on {device}", total=args.episodes, last="-")
        result = evaluate(
            agent, args.episodes, args.num_envs, args.epsilon, args.temperature, args.noop_max, args.seed,
            on_episode=lambda ep: progress.update(task, advance=1, last=f"{ep.ret:g}"),
        )  # fmt: skip
    result = {"checkpoint": str(args.ckpt_path), "device": str(device), **result}
    _print_table(result, args.ckpt_path)
    if args.json is not None:
        atomic_write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    return result


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    run_tool(COMMAND, lambda: run(args))
