"""`FastPathConfig`: which speed-ups a run uses (the config's `model.fast` section). What each one does and whether it
changes numerics is said next to its field; the measurements behind each default are in docs/performance.md."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diamond_pl.config_dicts import from_dict

COMPONENTS = ("denoiser", "rew_end_model", "actor_critic")
INFERENCE_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                    "fp16": torch.float16, "float32": None, "fp32": None, None: None}


@dataclass
class FastPathConfig:
    # CPU intra-op threads: an int, "auto" (calibrated on this machine now, `threads.py`; an explicit OMP_NUM_THREADS
    # wins) or None (leave torch's). Summation order only.
    cpu_threads: int | str | None = "auto"
    # NHWC activations by a pre-hook on every Conv2d: "inference" (passes without autograd: imagination, acting;
    # on CPU NHWC speeds up forward convolutions but slows their backward), "always" / True (weights too), False.
    # Float32 rounding noise.
    channels_last: bool | str = "inference"
    # CPU: glibc keeps large freed blocks for reuse instead of unmapping them (`host_memory.py`). No numerical effect.
    host_malloc_tuning: bool = True
    # torch.compile the networks in place, so state-dict keys stay the reference's (`compile.py`). Float32 noise.
    compile: bool = False
    compile_mode: str | None = None  # None: torch's default; "max-autotune-no-cudagraphs", "reduce-overhead", ...
    compile_dynamic: bool | None = False  # False: one static graph per input shape (batch 1 / 4 / 32 ...)
    compile_components: tuple[str, ...] = COMPONENTS  # which networks to compile
    # None: leave torch's setting; "high": TF32 matmuls and convolutions on GPUs. Changes numerics; GPU only.
    matmul_precision: str | None = None
    fused_adamw: bool | None = None  # None: torch's default; True: the fused AdamW kernel. Float32 noise.
    # GPU only: the imagination step's world-model calls replayed as CUDA graphs (`cuda_graphs.py`). Same arithmetic.
    cuda_graphs: bool = False
    # GPU only: autocast dtype of the imagination world-model calls ("bfloat16"); training stays float32. Not float32
    # noise, hence opt-in.
    inference_dtype: str | None = None

    def __post_init__(self) -> None:
        self.compile_components = tuple(self.compile_components)
        unknown = set(self.compile_components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"compile_components: unknown {sorted(unknown)}; valid: {list(COMPONENTS)}")
        if self.channels_last not in (True, False, "inference", "always", "never"):
            raise ValueError(f"channels_last must be 'inference', 'always' (True) or 'never' (False), got {self.channels_last!r}")
        if self.inference_dtype not in INFERENCE_DTYPES:
            raise ValueError(f"inference_dtype must be one of {[k for k in INFERENCE_DTYPES if k]} or None, "
                             f"got {self.inference_dtype!r}")
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
