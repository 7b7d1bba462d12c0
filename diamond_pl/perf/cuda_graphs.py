"""CUDA graphs for imagination's world-model calls (`FastPathConfig.cuda_graphs`, GPU only): the 3-step sampler and
the reward/end step are captured once per input shape and replayed, removing the per-kernel launch overhead that
dominates these small sequential calls (spec §19 item 1). Identical arithmetic."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor


class CudaGraphed:
    """Replays a CUDA graph of `fn(*tensors)` per input signature (shapes, dtypes, devices; `None` allowed).

    The first call with a new signature runs `fn` eagerly a few times on a side stream (warm-up, as CUDA graph capture
    requires), then captures it into static input/output buffers; later calls copy the inputs in, replay and return
    clones of the outputs (the static outputs are overwritten by the next replay). Calls under autograd, off CUDA, or
    with non-tensor arguments other than None (or nested tuples of tensors) run `fn` eagerly. The graphs read the
    parameters through their addresses, so in-place optimiser updates and `load_state_dict` are seen by later replays;
    replacing a parameter tensor object is not (do not do that between replays). Random numbers drawn inside `fn` with
    the default CUDA generator advance correctly on every replay.
    """

    def __init__(self, fn: Callable[..., Any], warmup: int = 3) -> None:
        self.fn, self.warmup = fn, warmup
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[Tensor | None], Any]] = {}
        self.pool = None

    @staticmethod
    def _flatten(args) -> list[Tensor | None]:
        out: list[Tensor | None] = []
        for a in args:
            if isinstance(a, (tuple, list)):
                out.extend(CudaGraphed._flatten(a))
            else:
                out.append(a)
        return out

    @staticmethod
    def _signature(flat: list) -> tuple | None:
        sig = []
        for t in flat:
            if t is None:
                sig.append(None)
            elif isinstance(t, Tensor) and t.is_cuda and not t.requires_grad:
                sig.append((tuple(t.shape), t.dtype, t.device, t.stride()))
            else:
                return None
        return tuple(sig)

    def __call__(self, *args):
        flat = self._flatten(args)
        sig = self._signature(flat)
        if sig is None or torch.is_grad_enabled():
            return self.fn(*args)
        if sig not in self.graphs:
            self.graphs[sig] = self._capture(args, flat)
        graph, static_in, static_out = self.graphs[sig]
        for dst, src in zip(static_in, flat):
            if dst is not None:
                dst.copy_(src, non_blocking=True)
        graph.replay()
        return map_tensors(static_out, lambda t: t.clone())

    def _capture(self, args, flat):
        static_in = [None if t is None else t.clone() for t in flat]
        static_args = _unflatten_like(args, iter(static_in))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.fn(*static_args)
        torch.cuda.current_stream().wait_stream(stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self.fn(*static_args)
        return graph, static_in, static_out


def _unflatten_like(args, it):
    out = []
    for a in args:
        if isinstance(a, (tuple, list)):
            out.append(type(a)(_unflatten_like(a, it)))
        else:
            out.append(next(it))
    return tuple(out)


def map_tensors(x, fn):
    """`fn` applied to every tensor of a nested tuple / list."""
    if isinstance(x, Tensor):
        return fn(x)
    if isinstance(x, (tuple, list)):
        return type(x)(map_tensors(v, fn) for v in x)
    return x
