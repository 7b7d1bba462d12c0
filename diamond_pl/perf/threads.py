"""CPU intra-op threads: on a CPU shared with other busy processes fewer threads can be much faster.

Every parallel region waits for its slowest thread, and a thread that has been preempted costs a whole scheduler time
slice: on the 2-core machine of docs/performance.md, under load, a 4 MB elementwise multiply took 16 ms with 2 threads
and 0.2 ms with 1, and a denoiser update ran 5x faster with 1 thread; idle, 2 threads were 1.7x faster than 1. So
"auto" times a slice of the networks' work and keeps the fastest count. Float32 summation order only."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch
from torch import Tensor

TORCH_DEFAULT_THREADS = torch.get_num_threads()  # torch's default (physical cores) before anything changed it


def _thread_probe() -> Callable[[], Tensor]:
    """A small slice of the networks' work: one 64-channel 3x3 convolution at 64x64 (NHWC) and the group norm,
    SiLU, scale/shift and residual passes that surround it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 64, 64, generator=g).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(64, 64, 3, 3, generator=g) / 24).contiguous(memory_format=torch.channels_last)
    scale, shift = torch.randn(4, 64, 1, 1, generator=g), torch.randn(4, 64, 1, 1, generator=g)

    @torch.no_grad()
    def work() -> Tensor:
        y = torch.nn.functional.group_norm(x, 2)
        y = torch.nn.functional.silu(y * (1 + scale) + shift)
        return torch.nn.functional.conv2d(y, w, padding=1) + x

    return work


def calibrate_cpu_threads(candidates: list[int] | None = None, rounds: int = 3) -> tuple[int, dict[int, float]]:
    """Pick the intra-op thread count that runs a slice of the networks' work fastest, *now*, on this machine.

    Candidates default to 1, half and all of torch's threads; rounds are interleaved so that a load change hits every
    candidate. Sets the winner; returns it and the median seconds per candidate."""
    n = max(TORCH_DEFAULT_THREADS, torch.get_num_threads())
    candidates = sorted(set(candidates or {1, max(1, n // 2), n}))
    work = _thread_probe()
    times: dict[int, list[float]] = {c: [] for c in candidates}
    for _ in range(rounds):
        for c in candidates:
            torch.set_num_threads(c)
            work()
            t = time.perf_counter()
            work()
            times[c].append(time.perf_counter() - t)
    medians = {c: statistics.median(v) for c, v in times.items()}
    best = min(candidates, key=lambda c: medians[c])
    torch.set_num_threads(best)
    return best, medians


def set_cpu_threads(setting: int | str | None) -> dict:
    """Apply `FastPathConfig.cpu_threads`: an int, "auto" (calibrate, unless OMP_NUM_THREADS is set: an explicit
    setting wins) or None (leave torch's). Returns what was done, for logs."""
    applied: dict = {}
    if setting is None:
        return applied
    if setting != "auto":
        torch.set_num_threads(int(setting))
    elif "OMP_NUM_THREADS" not in os.environ:
        applied["cpu_threads_calibration_s"] = calibrate_cpu_threads()[1]
    applied["cpu_threads"] = torch.get_num_threads()
    return applied
