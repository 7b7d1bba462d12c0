"""Fast paths for training and imagination (issue "Performance: benchmark command and fast paths").

`FastPathConfig` says which optimisations to use; `apply_fast_paths(agent, cfg)` applies them to a `DiamondAgent` in
place, before its optimisers are built (the agent calls it from `setup()`); `imagination_fns(agent, cfg)` wraps the
two world-model functions that imagination calls (GPU: autocast and CUDA graphs). Measured figures, the commands and
the reasons behind each default are in docs/performance.md (`python -m diamond_pl benchmark`).

What each option does, and whether it changes numerics:

* `cpu_threads` (default "auto"; CPU runs only): intra-op threads. "auto" times a slice of the networks' work with
  1, half and all of torch's threads and keeps the fastest, unless OMP_NUM_THREADS is set (then it is respected).
  On a CPU shared with other busy processes every parallel region waits for its slowest thread and a preempted
  thread costs a whole time slice: on the 2-core machine of docs/performance.md, under load, a 4 MB elementwise
  multiply took 16 ms with 2 threads and 0.2 ms with 1, and a denoiser update ran 5x faster with 1 thread; idle,
  2 threads were 1.7x faster than 1. No numerical effect beyond float32 summation order.
* `host_malloc_tuning` (default on; CPU runs only): glibc `mallopt` so that large allocations are reused from the
  heap instead of being `mmap`ed and `munmap`ed at every call. Without it every activation of the U-Net (megabytes
  each) is a fresh mapping whose pages the kernel faults in and zeroes (about 90,000 page faults per batch-8 forward
  pass); with it a batch-8 forward pass ran 1.4x faster, and at batch 32 (activations above glibc's 32 MB automatic
  mmap threshold) the denoiser and reward/end updates 1.9x and 2.3x (more since the heap is never trimmed, see
  `tune_host_malloc`). Costs memory: the heap keeps its high-water mark; `release_host_memory()` returns it, and
  `DiamondAgent` calls it whenever the trained component changes. Process-wide; no numerical effect; no-op without
  glibc.
* `channels_last` (default "inference"): NHWC activations, by a forward pre-hook on every Conv2d. "inference": only
  in passes without autograd (imagination's sampler and reward/end step, acting) — measured on CPU, NHWC made the
  forward convolutions 1.1-1.4x faster but training (forward + backward) 1.15x slower, so training stays NCHW;
  "always" (True): NHWC weights too, for every pass (the usual choice on GPUs, unmeasured here). Same arithmetic in
  another order: float32 rounding noise only. Weights keep their NCHW layout in "inference" mode.
* `compile` (default off): `torch.compile` of the three networks **in place** (`module.compile()`), so state-dict keys
  stay those of the reference (`torch.compile(module)` would prefix them with `_orig_mod.`). Inductor fuses the group
  norms, adaptive scale/shift, SiLU and residual adds between convolutions. On the 2-core CPU it took 2.5-9 minutes
  per network and input shape and gave no measurable gain for training (convolutions dominate and stay oneDNN
  calls), hence off by default; on GPUs, where the small sequential imagination calls are launch-bound, it is the
  expected large win (unmeasured here). `compile_components` restricts it. Float32 noise only.
* `matmul_precision` (default None: leave torch's setting): "high" allows TF32 matmuls/convolutions on GPUs, as the
  paper's fp32 training did on A100s. Changes numerics (10-bit mantissa inputs); GPU only.
* `fused_adamw` (default None: torch's default): the fused AdamW kernel (`OptimConfig.fused`). Float32 noise.
* `cuda_graphs` (default off, GPU only): the imagination step's world-model calls (3-step sampler, reward/end step)
  are captured once per input shape and replayed, removing the per-kernel launch overhead that dominates these small
  sequential calls (spec §19 item 1). Identical arithmetic.
* `inference_dtype` (default None = float32; "bfloat16" on GPUs): autocast for the imagination world-model calls only
  (training stays float32). Not within float32 noise: opt-in.

GPU options are implemented but unmeasured in this repository (no GPU was available when the defaults were chosen);
see docs/performance.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import Tensor, nn

from diamond_pl.config_dicts import from_dict


COMPONENTS = ("denoiser", "rew_end_model", "actor_critic")
_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # torch's default (physical cores) before anything changed it
_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "float32": None, "fp32": None, None: None}


@dataclass
class FastPathConfig:
    cpu_threads: int | str | None = "auto"  # CPU intra-op threads: an int, "auto" (calibrated), None (leave torch's)
    channels_last: bool | str = "inference"  # NHWC activations: "inference" (no-grad passes), "always" / True, False
    host_malloc_tuning: bool = True  # glibc: reuse large host allocations instead of mmap/munmap per call
    compile: bool = False  # torch.compile the networks in place (state-dict keys unchanged)
    compile_mode: str | None = None  # None: torch's default; "max-autotune-no-cudagraphs", "reduce-overhead", ...
    compile_dynamic: bool | None = False  # False: one static graph per input shape (batch 1 / 4 / 32 ...)
    compile_components: tuple[str, ...] = COMPONENTS  # which networks to compile
    matmul_precision: str | None = None  # None: leave as is; "high": TF32 on GPU
    fused_adamw: bool | None = None  # None: torch's default; True: fused AdamW kernel
    cuda_graphs: bool = False  # GPU only: capture the imagination world-model calls as CUDA graphs
    inference_dtype: str | None = None  # GPU only: autocast dtype of the imagination world-model calls ("bfloat16")

    def __post_init__(self) -> None:
        self.compile_components = tuple(self.compile_components)
        unknown = set(self.compile_components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"compile_components: unknown {sorted(unknown)}; valid: {list(COMPONENTS)}")
        if self.channels_last not in (True, False, "inference", "always", "never"):
            raise ValueError(f"channels_last must be 'inference', 'always' (True) or 'never' (False), got {self.channels_last!r}")
        if self.inference_dtype not in _DTYPES:
            raise ValueError(f"inference_dtype must be one of {[k for k in _DTYPES if k]} or None, got {self.inference_dtype!r}")
        if not (self.cpu_threads is None or self.cpu_threads == "auto"
                or (isinstance(self.cpu_threads, int) and not isinstance(self.cpu_threads, bool) and self.cpu_threads >= 1)):
            raise ValueError(f"cpu_threads must be a positive int, 'auto' or None, got {self.cpu_threads!r}")
        if self.matmul_precision not in (None, "highest", "high", "medium"):
            raise ValueError(f"matmul_precision must be None, 'highest', 'high' or 'medium', got {self.matmul_precision!r}")


def eager_config() -> FastPathConfig:
    """Every fast path off: the plain eager baseline (torch's own thread count)."""
    return FastPathConfig(cpu_threads=None, channels_last=False, host_malloc_tuning=False, compile=False)


def channels_last_mode(cfg: FastPathConfig) -> str | None:
    """"inference", "always" or None (off)."""
    return {True: "always", "always": "always", "inference": "inference"}.get(cfg.channels_last)


def as_fast_path_config(value: FastPathConfig | dict | None) -> FastPathConfig:
    """Accept a FastPathConfig, a dict of its fields (YAML / checkpoints) or None (defaults)."""
    return FastPathConfig() if value is None else from_dict(FastPathConfig, value)


# --- the networks ----------------------------------------------------------------------------------------------------


def networks(agent) -> dict[str, nn.Module]:
    """The three networks of a DiamondAgent: the denoiser's inner model F, the reward/end net, the actor-critic net.

    These are what `apply_fast_paths` changes; the Lightning modules around them (losses, metrics) stay eager."""
    return {
        "denoiser": agent.denoiser.denoiser.inner_model,
        "rew_end_model": agent.rew_end_model.net,
        "actor_critic": agent.actor_critic.net,
    }


def is_compiled(module: nn.Module) -> bool:
    """True if `module.compile()` was called on it (in place)."""
    return getattr(module, "_compiled_call_impl", None) is not None


# --- host allocator --------------------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_malloc_tuned: bool | None = None


def tune_host_malloc(mmap_threshold: int = 1 << 30, trim_threshold: int = -1) -> bool:
    """glibc: serve allocations below `mmap_threshold` from the heap and never trim it, so that freed activation
    buffers are reused rather than unmapped and faulted in again. Process-wide, once. Returns True if applied.

    `trim_threshold = -1` means "never": glibc stores it as a size_t, so -1 becomes SIZE_MAX. The largest positive
    int (2 GB) is not enough: a batch-32 reward/end backward pass frees ~2.7 GB at once, glibc then gave it back to
    the kernel (`brk` down) after every update and the next forward pass faulted it in again (about 150,000-660,000
    page faults and 3-5 s of system time per update on the 2-core CPU of docs/performance.md)."""
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, musl without mallopt, Windows)
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    threshold = mmap_threshold
    while threshold >= (32 << 20) and not mallopt(_M_MMAP_THRESHOLD, threshold):
        threshold //= 2  # older glibc caps the threshold (32 MB on 64-bit)
    _malloc_tuned = bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) and threshold >= (32 << 20)
    return _malloc_tuned


def release_host_memory() -> bool:
    """glibc `malloc_trim(0)`: give the heap's free memory back to the system. With `host_malloc_tuning` the heap is
    never trimmed by itself, so a process keeps its high-water mark (e.g. the reward/end model's backward pass at
    batch 32, about 10 GB) while later phases need far less; call this between phases (e.g. at the end of each
    component's block of updates). Cheap (milliseconds). Returns True if memory was released."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


# --- CPU threads ------------------------------------------------------------------------------------------------------


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

    On a CPU shared with other busy processes every parallel region waits for its slowest thread, and a thread
    that has been preempted costs a whole scheduler time slice: on the 2-core machine of docs/performance.md a
    4 MB elementwise multiply took 16 ms with 2 threads and 0.2 ms with 1, and a U-Net forward pass ran 3x faster
    with 1 thread. On an idle machine all cores win. Candidates default to 1, half and all of torch's threads;
    rounds are interleaved so that a load change hits every candidate. Sets the winner; returns it and the median
    seconds per candidate."""
    import statistics
    import time

    n = max(_TORCH_DEFAULT_THREADS, torch.get_num_threads())
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


# --- applying the fast paths ------------------------------------------------------------------------------------------


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
    if device.type == "cpu" and cfg.cpu_threads is not None:
        if cfg.cpu_threads != "auto":
            torch.set_num_threads(int(cfg.cpu_threads))
        elif "OMP_NUM_THREADS" in os.environ:
            pass  # an explicit OMP_NUM_THREADS wins over the calibration
        else:
            best, medians = calibrate_cpu_threads()
            applied["cpu_threads_calibration_s"] = medians
        applied["cpu_threads"] = torch.get_num_threads()
    mode = channels_last_mode(cfg)
    if mode == "always":
        for net in nets.values():
            net.to(memory_format=torch.channels_last)
    if mode is not None:
        for net in nets.values():
            for m in net.modules():
                if isinstance(m, nn.Conv2d):
                    m.register_forward_pre_hook(_nhwc_always if mode == "always" else _nhwc_without_grad)
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
            compile_in_place(nets[name], cfg)
        applied["compiled"] = list(cfg.compile_components)
    agent._fast_paths_applied = applied
    return applied


def applied_fast_paths(agent) -> dict[str, Any] | None:
    """What `apply_fast_paths` applied to `agent` (its return value), or None if it was not called."""
    return getattr(agent, "_fast_paths_applied", None)


def _nhwc(args: tuple) -> tuple | None:
    x = args[0]
    if isinstance(x, Tensor) and x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None  # already NHWC (the usual case after the first convolution): no copy


def _nhwc_always(module: nn.Module, args: tuple) -> tuple | None:
    return _nhwc(args)


def _nhwc_without_grad(module: nn.Module, args: tuple) -> tuple | None:
    """Only in passes without autograd (sampling, imagination's world-model step, acting): measured on CPU, NHWC
    speeds up the forward convolutions but slows down their backward, so training passes stay NCHW."""
    return None if torch.is_grad_enabled() else _nhwc(args)


def check_cpu_vector_isa() -> str | None:
    """The SIMD instruction set inductor will generate CPU code for ("avx2", "avx512", ...), or None with a warning.

    Without one, inductor emits scalar C++ (one `std::exp` per element), several times slower than eager; its compile
    cache then keeps those kernels for later processes. Seen when a local file shadowed a standard-library module
    (`re.py` next to a script), which makes inductor's ISA probe fail. Takes a few seconds (the probe builds a test
    program), so it is only called when compiling for a CPU."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()
    if not isa:
        warnings.warn(
            "torch.compile on CPU: inductor found no usable vector instruction set, so compiled kernels will be scalar "
            "and slower than eager. Check that a C++ compiler works and that no local file shadows a standard-library "
            "module (e.g. a re.py next to your script); then clear the inductor cache (TORCHINDUCTOR_CACHE_DIR, "
            "default /tmp/torchinductor_$USER), which keeps the scalar kernels. Or turn compile off: model.fast.compile: false"
        )
        return None
    return str(isa)


def compile_in_place(module: nn.Module, cfg: FastPathConfig) -> nn.Module:
    """`module.compile(...)`: the module object, its parameters and its state-dict keys stay the same.

    Compilation itself happens at the first call for each new input shape / grad mode (minutes on a small CPU at the
    paper's sizes)."""
    if isinstance(module, nn.Sequential):
        # torch 2.13, CPU: an in-place compiled nn.Sequential silently ran eager (lightning_notes item 10)
        warnings.warn("compiling an nn.Sequential in place may silently run eager; compile its parent instead")
    kwargs: dict[str, Any] = {"dynamic": cfg.compile_dynamic}
    if cfg.compile_mode is not None:
        kwargs["mode"] = cfg.compile_mode
    module.compile(**kwargs)
    return module


# --- imagination: autocast and CUDA graphs (GPU) --------------------------------------------------------------------


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
        return _map_tensors(static_out, lambda t: t.clone())

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


def _map_tensors(x, fn):
    if isinstance(x, Tensor):
        return fn(x)
    if isinstance(x, (tuple, list)):
        return type(x)(_map_tensors(v, fn) for v in x)
    return x


def _autocast(fn: Callable, dtype: torch.dtype, device_type: str = "cuda") -> Callable:
    """Run `fn` under autocast to `dtype` when its tensors are on `device_type`, returning float32 tensors (the env's
    buffers stay float32). Imagination uses it on CUDA only; tests exercise it on CPU."""

    def wrapped(*args):
        if not any(isinstance(a, Tensor) and a.device.type == device_type for a in args):
            return fn(*args)
        with torch.autocast(device_type, dtype=dtype):
            out = fn(*args)
        return _map_tensors(out, lambda t: t.float() if t.is_floating_point() else t)

    return wrapped


def imagination_fns(agent, cfg: FastPathConfig | dict | None = None) -> tuple[Callable, Callable]:
    """(next_obs_fn, rew_end_fn) for `WorldModelEnv`, with the GPU imagination fast paths of `cfg` applied.

    Without `cuda_graphs` / `inference_dtype` (or off CUDA, where both are skipped) these are exactly
    `agent.denoiser.sample_next_obs` and `agent.rew_end_model.net`. Build them once per agent and reuse them: each
    wrapper holds its captured graphs."""
    cfg = as_fast_path_config(cfg)
    next_obs_fn: Callable = agent.denoiser.sample_next_obs
    rew_end_fn: Callable = agent.rew_end_model.net
    dtype = _DTYPES[cfg.inference_dtype]
    if dtype is not None:
        next_obs_fn, rew_end_fn = _autocast(next_obs_fn, dtype), _autocast(rew_end_fn, dtype)
    if cfg.cuda_graphs and torch.cuda.is_available():
        next_obs_fn, rew_end_fn = CudaGraphed(next_obs_fn), CudaGraphed(rew_end_fn)
    return next_obs_fn, rew_end_fn
