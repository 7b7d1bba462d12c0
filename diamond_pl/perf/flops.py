"""FLOPs of a unit of work, forward and backward: torch's `FlopCounterMode` (matmuls, convolutions, attention) plus the
fused RNN kernels it has no formula for (oneDNN's `mkldnn_rnn_layer` on CPU, cuDNN's on GPU), which it would count as 0
(the reward/end model's LSTM)."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def rnn_flops(input_shape, weight_shapes, backward: bool = False) -> int:
    """FLOPs of one fused RNN kernel call: each 2-D weight (input-to-gates or hidden-to-gates, any layer or direction)
    is a matmul applied once per time step and sequence, i.e. to prod(input_shape[:-1]) vectors; 1-D entries (biases,
    a flat weight buffer) are skipped. The backward computes the input and the weight gradient of each matmul: 2x."""
    vectors = math.prod(input_shape[:-1])
    flops = sum(2 * vectors * w[0] * w[1] for w in weight_shapes if len(w) == 2)
    return 2 * flops if backward else flops


def _rnn_flop_formulas() -> dict:
    """`FlopCounterMode` formulas for the fused RNN kernels (tensors arrive as their sizes)."""
    aten = torch.ops.aten

    def onednn(input, w_ih, w_hh, *args, backward=False, **kwargs):
        return rnn_flops(input, [w_ih, w_hh], backward)

    def cudnn(input, weights, *args, backward=False, **kwargs):
        return rnn_flops(input, weights, backward)

    return {
        aten.mkldnn_rnn_layer: onednn,
        aten.mkldnn_rnn_layer_backward: lambda *a, **k: onednn(*a, backward=True, **k),
        aten._cudnn_rnn: cudnn,
        aten._cudnn_rnn_backward: lambda *a, **k: cudnn(*a, backward=True, **k),
    }


def count_flops(fn: Callable[[], Any]) -> int:
    """Forward and backward FLOPs of one call of `fn` (run eagerly: inductor kernels bypass the counter)."""
    with FlopCounterMode(display=False, custom_mapping=_rnn_flop_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())
