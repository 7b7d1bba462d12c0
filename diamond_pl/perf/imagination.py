"""The two world-model functions imagination calls, with the GPU fast paths of a FastPathConfig around them:
autocast to `inference_dtype` and CUDA graphs (`cuda_graphs.py`)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from diamond_pl.perf.config import INFERENCE_DTYPES, FastPathConfig, as_fast_path_config
from diamond_pl.perf.cuda_graphs import CudaGraphed, map_tensors


def autocast_float32_out(fn: Callable, dtype: torch.dtype, device_type: str = "cuda") -> Callable:
    """Run `fn` under autocast to `dtype` when its tensors are on `device_type`, returning float32 tensors (the env's
    buffers stay float32). Imagination uses it on CUDA only; tests exercise it on CPU."""

    def wrapped(*args):
        if not any(isinstance(a, Tensor) and a.device.type == device_type for a in args):
            return fn(*args)
        with torch.autocast(device_type, dtype=dtype):
            out = fn(*args)
        return map_tensors(out, lambda t: t.float() if t.is_floating_point() else t)

    return wrapped


def imagination_fns(agent, cfg: FastPathConfig | dict | None = None) -> tuple[Callable, Callable]:
    """(next_obs_fn, rew_end_fn) for `WorldModelEnv`, with the GPU imagination fast paths of `cfg` applied.

    Without `cuda_graphs` / `inference_dtype` (or off CUDA, where both are skipped) these are exactly
    `agent.denoiser.sample_next_obs` and `agent.rew_end_model.net`. Build them once per agent and reuse them: each
    wrapper holds its captured graphs."""
    cfg = as_fast_path_config(cfg)
    next_obs_fn: Callable = agent.denoiser.sample_next_obs
    rew_end_fn: Callable = agent.rew_end_model.net
    dtype = INFERENCE_DTYPES[cfg.inference_dtype]
    if dtype is not None:
        next_obs_fn, rew_end_fn = autocast_float32_out(next_obs_fn, dtype), autocast_float32_out(rew_end_fn, dtype)
    if cfg.cuda_graphs and torch.cuda.is_available():
        next_obs_fn, rew_end_fn = CudaGraphed(next_obs_fn), CudaGraphed(rew_end_fn)
    return next_obs_fn, rew_end_fn
