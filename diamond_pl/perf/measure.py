"""Measuring a unit of work on a possibly shared machine: wall and CPU time per unit, the matmul peak of the moment
to compare each unit with, peak host memory, and what the machine is. Used by `python -m diamond_pl benchmark`."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from diamond_pl.perf.threads import TORCH_DEFAULT_THREADS


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def reset_peak_rss() -> None:
    """Linux >= 4.0: writing 5 to clear_refs resets the peak RSS (VmHWM) of the process."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; a lifetime maximum
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def matmul_flops_per_s(device: torch.device, size: int, dtype: torch.dtype = torch.float32, reps: int = 3) -> float:
    """FLOP/s of a square matmul of side `size` (median of `reps` timings after one warm-up)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * size**3 / statistics.median(times)


def peak_flops_per_s(device: torch.device, size: int) -> float:
    """The peak to compare with: the larger of the matmul rate at the current thread count and at all of torch's
    default threads (a run on fewer threads than the machine has is not flattered by a lower peak)."""
    threads = torch.get_num_threads()
    peak = matmul_flops_per_s(device, size)
    if device.type == "cpu" and threads != TORCH_DEFAULT_THREADS:
        torch.set_num_threads(TORCH_DEFAULT_THREADS)
        try:
            peak = max(peak, matmul_flops_per_s(device, size))
        finally:
            torch.set_num_threads(threads)
    return peak


def timed_units(fn: Callable[[], Any], warmup: int, repeats: int, device: torch.device,
                peak_fn: Callable[[], float] | None = None) -> dict[str, list[float]]:
    """Run `fn` warmup + repeats times; seconds of the warm-up units (compilation included), and wall and CPU seconds
    of the timed ones. `peak_fn` samples the machine's peak before every timed unit and after the last one, so each
    unit can be compared with the peak of its own moment: on a shared machine the load changes within a phase."""
    out: dict[str, list[float]] = {"warmup_s": [], "times_s": [], "cpu_s": [], "peak_samples": []}
    for _ in range(warmup):
        t = time.perf_counter()
        fn()
        sync(device)
        out["warmup_s"].append(time.perf_counter() - t)
    for _ in range(repeats):
        if peak_fn is not None:
            out["peak_samples"].append(peak_fn())
        c, t = cpu_seconds(), time.perf_counter()
        fn()
        sync(device)
        out["times_s"].append(time.perf_counter() - t)
        out["cpu_s"].append(cpu_seconds() - c)
    if peak_fn is not None:
        out["peak_samples"].append(peak_fn())
    return out


def unit_utilisation(flops: int, times: list[float], peaks: list[float]) -> tuple[list[float], list[float]]:
    """Per timed unit: the peak of its moment (mean of the samples before and after it) and FLOPs / time / that peak."""
    around = [(peaks[i] + peaks[i + 1]) / 2 for i in range(len(times))]
    return around, [flops / t / p for t, p in zip(times, around)]


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpu_model": _cpu_model(), "logical_cpus": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "device": device}
    with contextlib.suppress(OSError):
        info["loadavg"] = list(os.getloadavg())
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
