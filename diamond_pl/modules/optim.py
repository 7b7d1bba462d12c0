"""Optimiser and learning-rate schedule shared by the three components (reference spec §9.2).

AdamW with minGPT-style grouping: weight decay only on the weights of Linear / Conv / LSTM modules; biases and the
weights of norms and embeddings are not decayed. The learning rate warms up linearly from 0 over `warmup_steps`
optimiser steps (factor min(1, step / warmup_steps), so the very first step uses lr = 0, as the reference does) and
then stays constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DECAYED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LSTM, nn.LSTMCell)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    eps: float = 1e-8
    weight_decay: float = 0.01  # 0 for the actor-critic
    warmup_steps: int = 100
    max_grad_norm: float = 1.0  # denoiser 1.0, reward/end 100, actor-critic 100
    fused: bool | None = None  # None: torch's default (foreach); True: fused kernel (GPU)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_weight = name.startswith("weight")  # LSTM weights are weight_ih_l0, weight_hh_l0, ...
            (decay if isinstance(module, DECAYED_MODULES) and is_weight else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_factor(step: int, warmup_steps: int) -> float:
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


def configure_adamw(model: nn.Module, cfg: OptimConfig) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    kwargs = {} if cfg.fused is None else {"fused": cfg.fused}
    opt = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, eps=cfg.eps, **kwargs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_factor(step, cfg.warmup_steps))
    return opt, sched
