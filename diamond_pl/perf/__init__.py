"""Fast paths for training and imagination, one concern per module:

  config.py         FastPathConfig (the config's `model.fast` section): which speed-ups to use, and whether each
                    changes numerics
  apply.py          apply_fast_paths(agent, cfg): applies them to a DiamondAgent in place (from its `setup()`)
  host_memory.py    glibc heap tuning and release (CPU)
  threads.py        intra-op thread count, calibrated on a loaded machine (CPU)
  channels_last.py  NHWC activations
  compile.py        torch.compile in place (state-dict keys unchanged)
  cuda_graphs.py    CUDA-graph replay of imagination's world-model calls (GPU)
  imagination.py    imagination_fns(agent, cfg): those calls with autocast / CUDA graphs applied

What to set on CPU and GPU, and the measured figures behind each default: docs/performance.md.
"""

from diamond_pl.perf.apply import applied_fast_paths, apply_fast_paths, networks
from diamond_pl.perf.compile import check_cpu_vector_isa, compile_in_place, is_compiled
from diamond_pl.perf.config import (
    COMPONENTS, INFERENCE_DTYPES, FastPathConfig, as_fast_path_config, channels_last_mode, eager_config,
)
from diamond_pl.perf.cuda_graphs import CudaGraphed
from diamond_pl.perf.host_memory import release_host_memory, tune_host_malloc
from diamond_pl.perf.imagination import imagination_fns
from diamond_pl.perf.threads import TORCH_DEFAULT_THREADS, calibrate_cpu_threads, set_cpu_threads

__all__ = [
    "COMPONENTS", "INFERENCE_DTYPES", "TORCH_DEFAULT_THREADS", "CudaGraphed", "FastPathConfig", "applied_fast_paths",
    "apply_fast_paths", "as_fast_path_config", "calibrate_cpu_threads", "channels_last_mode", "check_cpu_vector_isa",
    "compile_in_place", "eager_config", "imagination_fns", "is_compiled", "networks", "release_host_memory",
    "set_cpu_threads", "tune_host_malloc",
]
