"""`python -m diamond_pl wm-metrics --ckpt_path CKPT [--episodes 20] [--horizon 10] [--json OUT.json]`

The world model's PSNR / SSIM against the real frames after 1 and K autoregressive steps, next to the "repeat the last
frame" baseline, on fresh held-out episodes: the checkpoint's env is played by a uniformly random policy (new seeds,
never in the train set), the episodes go to a temporary store, and every window of n + K real frames (consecutive,
non-overlapping, as the test metrics of `fit`) is imagined open-loop from its first n frames with the real actions.
A random policy gives long, varied episodes, where the agent's own test games can be too short for K steps (a good
agent ends a small env in a few steps). Same metric code as `fit`'s `denoiser/test/world_model/*`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from diamond_pl.atomic import atomic_write_bytes
from diamond_pl.tools.common import ToolError, load_tool_agent, pick_device, run_tool, tool_parser

COMMAND = "wm-metrics"


def parser():
    p = tool_parser(COMMAND, "World-model PSNR/SSIM (1 and K steps) vs the copy-last-frame baseline on held-out "
                    "random-policy episodes.", seeds="env resets and the random policy")  # fmt: skip
    p.add_argument("--episodes", type=int, default=20, help="held-out episodes to play (default 20)")
    p.add_argument("--horizon", type=int, default=10, help="autoregressive steps K (default 10)")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics to this JSON file")
    return p


def world_model_metrics(agent, episodes: int, horizon: int, seed: int | None) -> dict[str, float]:
    import torch

    with torch.no_grad():
        return _metrics(agent, episodes, horizon, seed)


def _metrics(agent, episodes: int, horizon: int, seed: int | None) -> dict[str, float]:
    from diamond_pl.data.collector import Collector, RandomPolicy
    from diamond_pl.data.store import EpisodeStore
    from diamond_pl.data.traversal import Traversal
    from diamond_pl.modules.denoiser import DenoiserModule

    den = agent.denoiser
    metrics_module = DenoiserModule(den.net_cfg, den.sampler_cfg, den.optim_cfg, den.diffusion_cfg, horizon)
    metrics_module.load_state_dict(den.state_dict(), strict=False)  # the trained weights; metrics for this horizon
    metrics_module.to(agent.device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        store = EpisodeStore(Path(tmp), "held_out")
        env = agent.env_spec.make(1, train=False, seed=seed)
        try:
            Collector(env, store, RandomPolicy(agent.num_actions, seed=seed), 0.0, reset_every_collect=True,
                      seed=seed).collect(num_episodes=episodes)
        finally:
            env.close()
        n = den.num_steps_conditioning
        windows = 0
        for batch in Traversal(store, 32, n + horizon):
            windows += int(batch.mask_padding.all(dim=1).sum())
            metrics_module.update_world_model_metrics(batch.to(agent.device))
    if windows == 0:
        raise ToolError(f"no held-out episode is {n + horizon} steps long; play more --episodes or lower --horizon")
    out = {k.removeprefix("world_model/"): float(v) for k, v in metrics_module.compute_world_model_metrics().items()}
    return {**out, "windows": windows, "episodes": episodes}


def run(args) -> None:
    import torch  # here, not at the top: `wm-metrics --help` must not wait for torch

    device = pick_device(args.device)
    agent = load_tool_agent(args.ckpt_path, device)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    metrics = world_model_metrics(agent, args.episodes, args.horizon, args.seed)
    for k, v in metrics.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    if args.json is not None:
        atomic_write_bytes(args.json, json.dumps(metrics, indent=1).encode())


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    run_tool(COMMAND, lambda: run(args))
