"""torch.compile of the networks **in place** (`module.compile()`), so state-dict keys stay those of the reference
(`torch.compile(module)` would prefix them with `_orig_mod.`). Inductor fuses the group norms, scale/shift, SiLU and
residual adds between convolutions. On the 2-core CPU of docs/performance.md it took minutes per network and input
shape and gave no gain (convolutions dominate and stay oneDNN calls), hence off by default; on GPUs, where the small
sequential imagination calls are launch-bound, it is the expected win. Float32 noise only."""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn


def is_compiled(module: nn.Module) -> bool:
    """True if `module.compile()` was called on it (in place)."""
    return getattr(module, "_compiled_call_impl", None) is not None


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


def compile_in_place(module: nn.Module, mode: str | None = None, dynamic: bool | None = False) -> nn.Module:
    """`module.compile(...)`: the module object, its parameters and its state-dict keys stay the same.

    Compilation itself happens at the first call for each new input shape / grad mode (minutes on a small CPU at the
    paper's sizes)."""
    if isinstance(module, nn.Sequential):
        # torch 2.13, CPU: an in-place compiled nn.Sequential silently ran eager (lightning_notes item 10)
        warnings.warn("compiling an nn.Sequential in place may silently run eager; compile its parent instead")
    kwargs: dict[str, Any] = {"dynamic": dynamic}
    if mode is not None:
        kwargs["mode"] = mode
    module.compile(**kwargs)
    return module
