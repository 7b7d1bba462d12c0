"""Host memory (glibc): reuse large freed blocks instead of unmapping them, and give the heap back between phases.

Without tuning, every activation above glibc's mmap threshold (at most 32 MB; most batch-32 activations) is a fresh
mapping whose pages the kernel faults in and zeroes at every call: the denoiser and reward/end updates ran 1.9x and
2.3x faster with it on the 2-core CPU of docs/performance.md. No numerical effect; a no-op without glibc."""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_malloc_tuned: bool | None = None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def tune_host_malloc(mmap_threshold: int = 1 << 30, trim_threshold: int = -1) -> bool:
    """glibc: serve allocations below `mmap_threshold` from the heap and never trim it, so that freed activation
    buffers are reused rather than unmapped and faulted in again. Process-wide, once. Returns True if applied.

    `trim_threshold = -1` means "never": glibc stores it as a size_t, so -1 becomes SIZE_MAX. The largest positive
    int (2 GB) is not enough: a batch-32 reward/end backward pass frees ~2.7 GB at once, and glibc then gave it back to
    the kernel after every update (150,000-660,000 page faults and 3-5 s of system time per update on 2 cores)."""
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, musl without mallopt, Windows)
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    threshold = mmap_threshold
    while threshold >= (32 << 20) and not mallopt(_M_MMAP_THRESHOLD, threshold):
        threshold //= 2  # older glibc caps the threshold (32 MB on 64-bit)
    _malloc_tuned = bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) and threshold >= (32 << 20)
    return _malloc_tuned


def release_host_memory() -> bool:
    """glibc `malloc_trim(0)`: give the heap's free memory back to the system. A tuned heap is never trimmed by itself,
    so a process keeps its high-water mark (e.g. ~10 GB after a batch-32 reward/end backward pass) while later phases
    need far less; `DiamondAgent` calls this whenever the trained component changes. Returns True if memory was
    released."""
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False
