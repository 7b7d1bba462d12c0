"""NHWC activations by a forward pre-hook on every Conv2d (`FastPathConfig.channels_last`).

Measured on CPU, NHWC made the forward convolutions 1.1-1.4x faster but training (forward + backward) 1.15x slower,
so the default ("inference") converts only in passes without autograd: imagination's sampler and reward/end step,
burn-ins, acting. "always" also converts the weights (the usual choice on GPUs). Float32 rounding noise only."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def use_channels_last(nets: list[nn.Module], mode: str) -> None:
    """`mode` "always": NHWC weights and activations in every pass; "inference": NHWC activations without autograd."""
    for net in nets:
        if mode == "always":
            net.to(memory_format=torch.channels_last)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_pre_hook(_nhwc_always if mode == "always" else _nhwc_without_grad)


def _nhwc(args: tuple) -> tuple | None:
    x = args[0]
    if isinstance(x, Tensor) and x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None  # already NHWC (the usual case after the first convolution): no copy


def _nhwc_always(module: nn.Module, args: tuple) -> tuple | None:
    return _nhwc(args)


def _nhwc_without_grad(module: nn.Module, args: tuple) -> tuple | None:
    return None if torch.is_grad_enabled() else _nhwc(args)
