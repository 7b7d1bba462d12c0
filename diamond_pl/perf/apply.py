"""`apply_fast_paths(agent, cfg)`: a FastPathConfig applied to a DiamondAgent in place, before its optimisers are built
(the agent calls it from `setup()`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from diamond_pl.perf.channels_last import use_channels_last
from diamond_pl.perf.compile import check_cpu_vector_isa, compile_in_place
from diamond_pl.perf.config import COMPONENTS, FastPathConfig, as_fast_path_config, channels_last_mode
from diamond_pl.perf.host_memory import tune_host_malloc
from diamond_pl.perf.threads import set_cpu_threads


def networks(agent) -> dict[str, nn.Module]:
    """The three networks of a DiamondAgent: the denoiser's inner model F, the reward/end net, the actor-critic net.

    These are what `apply_fast_paths` changes; the Lightning modules around them (losses, metrics) stay eager."""
    return {
        "denoiser": agent.denoiser.denoiser.inner_model,
        "rew_end_model": agent.rew_end_model.net,
        "actor_critic": agent.actor_critic.net,
    }


def apply_fast_paths(agent, cfg: FastPathConfig | dict | None = None, device: torch.device | str | None = None) -> dict[str, Any]:
    """Apply `cfg` to a DiamondAgent in place; returns what was applied (for logs).

    Call before the optimisers are created (`fused_adamw` edits the components' optimiser configs) — in Lightning,
    from `setup()`. `device` is where the agent will run (default: where its parameters are now); it only decides
    whether host-side tuning applies. Idempotent: a second call with the same config does nothing.
    """
    cfg = as_fast_path_config(cfg)
    previous = applied_fast_paths(agent)
    if previous is not None:
        if previous["config"] != cfg:
            raise RuntimeError("apply_fast_paths was already called on this agent with another config")
        return previous
    device = torch.device(device) if device is not None else next(agent.parameters()).device
    nets = networks(agent)
    applied: dict[str, Any] = {"config": cfg, "device": str(device)}

    if cfg.matmul_precision is not None and device.type == "cuda":  # TF32 is a GPU notion; keep CPU math as is
        torch.set_float32_matmul_precision(cfg.matmul_precision)
        applied["matmul_precision"] = cfg.matmul_precision
    if cfg.host_malloc_tuning and device.type == "cpu":
        applied["host_malloc_tuning"] = tune_host_malloc()
    if device.type == "cpu":
        applied.update(set_cpu_threads(cfg.cpu_threads))
    mode = channels_last_mode(cfg)
    if mode is not None:
        use_channels_last(list(nets.values()), mode)
        applied["channels_last"] = {"mode": mode, "networks": list(nets)}
    if cfg.fused_adamw is not None:
        for name in COMPONENTS:
            module = agent.components[name] if hasattr(agent, "components") else getattr(agent, name)
            module.optim_cfg = replace(module.optim_cfg, fused=cfg.fused_adamw)
        applied["fused_adamw"] = cfg.fused_adamw
    if cfg.compile:
        if device.type == "cpu":
            applied["cpu_vector_isa"] = check_cpu_vector_isa()
        for name in cfg.compile_components:
            compile_in_place(nets[name], cfg.compile_mode, cfg.compile_dynamic)
        applied["compiled"] = list(cfg.compile_components)
    agent._fast_paths_applied = applied
    return applied


def applied_fast_paths(agent) -> dict[str, Any] | None:
    """What `apply_fast_paths` applied to `agent` (its return value), or None if it was not called."""
    return getattr(agent, "_fast_paths_applied", None)
