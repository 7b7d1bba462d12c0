"""`python -m diamond_pl benchmark --config configs/breakout.yaml`: throughput of every phase of a DIAMOND run.

Builds the agent at the config's sizes (`model` section -> DiamondAgent kwargs, `data.game`, `data.batch_size`,
`data.denoiser_seq_len`, `data.rew_end_seq_len`) on random data of the right shapes (a synthetic EpisodeStore in a
temporary folder feeds the sampler-driven phases) and measures, per variant (`eager`: every fast path off; `fast`:
`diamond_pl.perf.FastPathConfig` from the config's `model.fast` section, else compile + channels_last + host malloc
tuning, then the command-line overrides):

  phase         unit      what one unit is
  denoiser      update    sample a batch, 2-iteration EDM loss (T = n + 2), backward, clip, AdamW, lr schedule
  rew_end       update    sample a batch, reward/end loss over T = 19 frames (18 transitions), backward, clip, AdamW
  imagination   step      policy step + world-model step for num_envs envs (3 denoising steps, reward/end step)
  actor_critic  update    15 imagined steps with gradient, lambda returns, loss, backward, clip, AdamW
  env           step      one real train-env step while acting (AtariEnv + policy, collection of 100 steps)
  eval          episode   full test games with parallel envs (each repeat capped at --eval-steps steps per env)

For each: median / min / max seconds per unit over --repeats (after --warmup units, whose time is reported apart: it
includes compilation), FLOPs per unit (torch.utils.flop_counter.FlopCounterMode: matmuls, convolutions, attention;
plus the fused LSTM kernels it has no formula for; forward and backward), achieved FLOP/s and utilisation = achieved /
peak, where peak is a large fp32 matmul timed in the same process right before and after every timed unit: each unit is
compared with the mean of the two samples around it (a busy machine lowers both) and the phase's utilisation is the
median over its units; process CPU seconds per unit; peak host RSS (VmHWM, reset before each phase) and peak device
memory (torch.cuda.max_memory_allocated). Then a projection of a full paper run (spec §9.4): 409,600 denoiser and
reward/end updates, 404,600 actor-critic updates, 100k env steps, 500 evaluation episodes.

Each variant runs in its own subprocess (process-wide settings such as host malloc tuning and compile caches do not
leak between variants; `--in-process` runs them in this process instead). Results: a rich table, and `--json OUT`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

from diamond_pl.errors import RunError, UsageError

PHASES = ("denoiser", "rew_end", "imagination", "actor_critic", "env", "eval")
NETWORK_PHASES = ("denoiser", "rew_end", "imagination", "actor_critic")
UNITS = {"denoiser": "update", "rew_end": "update", "imagination": "step", "actor_critic": "update",
         "env": "step", "eval": "episode"}
VARIANTS = ("eager", "fast")

# spec §9.4, 1,000 epochs (950 collection epochs + 50 final): updates per component, real env steps, test episodes
PAPER_RUN = {"denoiser": 409_600, "rew_end": 409_600, "actor_critic": 404_600, "env_steps": 100_000,
             "eval_episodes": 95 * 4 + 100}  # 4 episodes every 10 epochs over 950 + 50 epochs (~100 evaluations) + 100 final

# The reference implementation on a 2-core CPU like this one (fp32, batch 32): seconds per unit and utilisation of a
# ~175 GFLOP/s fp32 matmul peak; paper-size forward GFLOP for orientation.
REFERENCE = {
    "cpu_2core": {
        "peak_gflops": 175.0,
        "denoiser": {"eager_s": 30.0, "compiled_s": 12.7, "eager_util": 0.22, "compiled_util": 0.53},
        "rew_end": {"eager_s": 29.0, "eager_util": 0.15},
        "imagination": {"eager_s": 9.3, "compiled_s": 5.2, "compiled_util": 0.66},
    },
    "forward_gflop_batch32": {"denoiser": 195.0, "rew_end_18_steps": 258.0, "actor_critic_step": 3.9},
    "gpu_targets": {"per_component_speedup_vs_reference": 3.0, "projected_100k_run_hours": 6.0},
}


# --- configuration ------------------------------------------------------------------------------------------------------


def load_config(path: str | Path) -> dict:
    import yaml

    if not Path(path).is_file():
        raise UsageError(f"--config {path}: no such file")
    with open(path) as f:
        try:
            cfg = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise UsageError(f"--config {path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise UsageError(f"--config {path} has no `model` section; pass a training config such as configs/smoke.yaml")
    return cfg


def _scaled(c: int, scale: float, multiple: int) -> int:
    return max(multiple, int(round(c * scale / multiple)) * multiple)


def scale_model(model: dict, scale: float) -> dict:
    """Widths (channels, conditioning, LSTM) times `scale`, for quick runs. Depths and resolutions are unchanged."""
    if scale == 1.0:
        return model
    model = copy.deepcopy(model)
    n = int(model.get("denoiser", {}).get("num_steps_conditioning", 4))
    for key in ("denoiser", "rew_end_model", "actor_critic"):
        sub = model.setdefault(key, {})
        defaults = _net_defaults(key)
        sub["channels"] = [_scaled(c, scale, 8) for c in sub.get("channels", defaults["channels"])]
        if "cond_channels" in defaults:
            sub["cond_channels"] = _scaled(sub.get("cond_channels", defaults["cond_channels"]), scale, math.lcm(8, 2 * n))
        if "lstm_dim" in defaults:
            sub["lstm_dim"] = _scaled(sub.get("lstm_dim", defaults["lstm_dim"]), scale, 8)
    return model


def _net_defaults(key: str) -> dict:
    from diamond_pl.nets.actor_critic_net import ActorCriticNetConfig
    from diamond_pl.nets.denoiser_net import DenoiserNetConfig
    from diamond_pl.nets.rew_end_net import RewEndNetConfig

    cls = {"denoiser": DenoiserNetConfig, "rew_end_model": RewEndNetConfig, "actor_critic": ActorCriticNetConfig}[key]
    return asdict(cls())


def fast_config(cfg: dict, overrides: dict) -> dict:
    """The fast variant's FastPathConfig (as a dict): the config's `model.fast` section, else the defaults, then
    command-line overrides."""
    from diamond_pl.perf import as_fast_path_config

    base = as_fast_path_config(cfg["model"].get("fast"))  # FastPathConfig() defaults without a `fast` section
    return asdict(replace(base, **{k: v for k, v in overrides.items() if v is not None}))


# --- measurement helpers ------------------------------------------------------------------------------------------------


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _reset_peak_rss() -> None:
    """Linux >= 4.0: writing 5 to clear_refs resets the peak RSS (VmHWM) of the process."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; a lifetime maximum
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def measure_peak_flops(device, dtype=None, size: int | None = None, reps: int = 3) -> float:
    """FLOP/s of a large square matmul (median of `reps` timings after one warm-up)."""
    import torch

    dtype = dtype or torch.float32
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    _sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * size**3 / statistics.median(times)


def machine_peak_flops(device, size: int | None = None) -> float:
    """The peak to compare with: the larger of the matmul rate at the current thread count and at all of torch's
    default threads (a variant that runs on fewer threads than the machine has is not flattered by a lower peak).
    `size`: side of the matmul (--peak-size; None: 2048 on CPU, 8192 on GPU)."""
    import torch

    from diamond_pl.perf import _TORCH_DEFAULT_THREADS

    threads = torch.get_num_threads()
    peak = measure_peak_flops(device, size=size)
    if device.type == "cpu" and threads != _TORCH_DEFAULT_THREADS:
        torch.set_num_threads(_TORCH_DEFAULT_THREADS)
        try:
            peak = max(peak, measure_peak_flops(device, size=size))
        finally:
            torch.set_num_threads(threads)
    return peak


def rnn_flops(input_shape, weight_shapes, backward: bool = False) -> int:
    """FLOPs of one fused RNN kernel call: each 2-D weight (input-to-gates or hidden-to-gates, any layer or direction)
    is a matmul applied once per time step and sequence, i.e. to prod(input_shape[:-1]) vectors; 1-D entries (biases,
    a flat weight buffer) are skipped. The backward computes the input and the weight gradient of each matmul: 2x."""
    vectors = math.prod(input_shape[:-1])
    flops = sum(2 * vectors * w[0] * w[1] for w in weight_shapes if len(w) == 2)
    return 2 * flops if backward else flops


def _rnn_flop_formulas() -> dict:
    """`FlopCounterMode` has no formula for the fused RNN kernels that `nn.LSTM` runs (oneDNN's on CPU, cuDNN's on GPU)
    and would count the reward/end LSTM as 0 FLOPs. Formulas take shapes (tensors replaced by their sizes)."""
    import torch

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
    """Forward and backward FLOPs of one call of `fn`: torch's counter (matmuls, convolutions, attention) plus the
    fused RNN kernels."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_rnn_flop_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())


def timed_units(fn: Callable[[], Any], warmup: int, repeats: int, device, flops_fn: Callable[[], int] | None,
                peak_fn: Callable[[], float] | None = None):
    """Run `fn` warmup + repeats times. The first warm-up unit counts FLOPs (eager variant) when `flops_fn` is given.
    `peak_fn` (network phases) samples the machine's peak before every timed unit and after the last one, so each
    unit can be compared with the peak of its own moment: on a shared machine the load changes within a phase."""
    warm, flops, peaks = [], None, []
    for i in range(warmup):
        t = time.perf_counter()
        if i == 0 and flops_fn is not None:
            flops = flops_fn()
        else:
            fn()
        _sync(device)
        warm.append(time.perf_counter() - t)
    times, cpu = [], []
    for _ in range(repeats):
        if peak_fn is not None:
            peaks.append(peak_fn())
        c = _cpu_seconds()
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
        cpu.append(_cpu_seconds() - c)
    if peak_fn is not None:
        peaks.append(peak_fn())
    return warm, times, cpu, flops, peaks


def unit_utilisation(flops: int, times: list[float], peaks: list[float]) -> tuple[list[float], list[float]]:
    """Per timed unit: the peak of its moment (mean of the samples before and after it) and FLOPs / time / that peak."""
    around = [(peaks[i] + peaks[i + 1]) / 2 for i in range(len(times))]
    return around, [flops / t / p for t, p in zip(times, around)]


# --- data ------------------------------------------------------------------------------------------------------------


def synthetic_store(directory: Path, num_actions: int, num_episodes: int = 16, length: int = 120, seed: int = 0):
    """Random uint8 episodes (a few rewards and ends), in RAM only."""
    import numpy as np

    from diamond_pl.data.episode import Episode
    from diamond_pl.data.store import EpisodeStore

    rng = np.random.default_rng(seed)
    store = EpisodeStore(directory, "train_dataset")
    store.persist = False
    for _ in range(num_episodes):
        obs = rng.integers(0, 256, size=(length, 3, 64, 64), dtype=np.uint8)
        act = rng.integers(0, num_actions, size=length)
        rew = rng.choice(np.array([-1.0, 0.0, 1.0], dtype=np.float32), size=length, p=[0.05, 0.85, 0.1])
        end = np.zeros(length, bool)
        end[-1] = True
        final = rng.integers(0, 256, size=(3, 64, 64), dtype=np.uint8)
        store.add_episode(Episode(obs, act, rew, end, np.zeros(length, bool), final))
    return store


# --- phases -----------------------------------------------------------------------------------------------------------


class Context:
    def __init__(self, agent, data: dict, store, device, batch_size: int, tmp: Path, seed: int, args: dict) -> None:
        self.agent, self.data, self.store, self.device = agent, data, store, device
        self.batch_size, self.tmp, self.seed, self.args = batch_size, tmp, seed, args


def _optimizer(module):
    cfg = module.configure_optimizers()
    return cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]


def _update(module, loss, opt, sched) -> None:
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), module.optim_cfg.max_grad_norm)
    opt.step()
    sched.step()


def phase_denoiser(ctx: Context, agent) -> Callable[[], None]:
    from diamond_pl.data.sampler import SegmentSampler

    module = agent.denoiser
    sampler = SegmentSampler(ctx.store, ctx.batch_size, int(ctx.data.get("denoiser_seq_len", 6)), seed=ctx.seed)
    opt, sched = _optimizer(module)

    def step():
        loss, _ = module.loss(sampler.sample().to(ctx.device))
        _update(module, loss, opt, sched)

    return step


def phase_rew_end(ctx: Context, agent) -> Callable[[], None]:
    from diamond_pl.data.sampler import SegmentSampler

    module = agent.rew_end_model
    seq_len = int(ctx.data.get("rew_end_seq_len", 19))
    sampler = SegmentSampler(ctx.store, ctx.batch_size, seq_len, can_sample_beyond_end=True, seed=ctx.seed)
    opt, sched = _optimizer(module)

    def step():
        loss, _ = module.loss(sampler.sample().to(ctx.device), "train")
        _update(module, loss, opt, sched)

    return step


def _world_model_env(ctx: Context, agent, units_of_steps: int):
    """A WorldModelEnv with the agent's networks and enough preloaded contexts for the whole phase (no refill)."""
    import torch

    from diamond_pl.data.sampler import SegmentSampler
    from diamond_pl.envs.world_model_env import WorldModelEnv
    from diamond_pl.perf import imagination_fns

    n = agent.denoiser.num_steps_conditioning
    num_envs = ctx.batch_size
    sampler = SegmentSampler(ctx.store, num_envs, n, seed=ctx.seed)
    # each imagined step uses at most num_envs new contexts
    cfg = replace(agent.world_model_env_cfg, num_envs=num_envs,
                  num_batches_to_preload=min(agent.world_model_env_cfg.num_batches_to_preload, units_of_steps + 2))
    next_obs_fn, rew_end_fn = imagination_fns(agent, ctx.args["fast_cfg"])
    env = WorldModelEnv(next_obs_fn, rew_end_fn, sampler.sample, cfg, device=ctx.device,
                        generator=torch.Generator(ctx.device).manual_seed(ctx.seed))
    env.refill_contexts()
    return env


def phase_imagination(ctx: Context, agent) -> Callable[[], None]:
    import torch

    from diamond_pl.envs.env_loop import policy_step

    total = ctx.args["warmup"] + ctx.args["repeats"] + 1
    env = _world_model_env(ctx, agent, total)
    net, temperature = agent.actor_critic.net, agent.actor_critic.loss_cfg.temperature
    state = {"obs": env.reset(), "hx_cx": None}

    @torch.no_grad()
    def step():
        act, _, _, state["hx_cx"] = policy_step(net, state["obs"], state["hx_cx"], temperature)
        state["obs"] = env.step(act).obs

    return step


def phase_actor_critic(ctx: Context, agent) -> Callable[[], None]:
    module = agent.actor_critic
    k = module.loss_cfg.backup_every
    env = _world_model_env(ctx, agent, (ctx.args["warmup"] + ctx.args["repeats"] + 1) * k)
    env_loop = module.make_env_loop(env)
    opt, sched = _optimizer(module)

    def step():
        loss, _ = module.loss(env_loop)
        _update(module, loss, opt, sched)

    return step


def _policy(agent):
    from diamond_pl.modules.actor_critic import ActorCriticPolicy

    return ActorCriticPolicy(agent.actor_critic.net, agent.actor_critic.loss_cfg.temperature)


def phase_env(ctx: Context, agent):
    """One repeat = one epoch's collection: 100 steps of 1 train env (epsilon 0.01), episodes saved to disk."""
    from diamond_pl.data.collector import Collector
    from diamond_pl.data.store import EpisodeStore
    steps = int(ctx.args["env_steps"])
    env = agent.env_spec.make(1, train=True, seed=ctx.seed)
    store = EpisodeStore(ctx.tmp / "env_train", "train_dataset")
    collector = Collector(env, store, _policy(agent), epsilon=0.01, seed=ctx.seed)

    def step():
        collector.collect(num_steps=steps)

    return step, steps


def phase_eval(ctx: Context, agent):
    """One repeat = full test games on `num_eval_envs` parallel envs, capped at `eval_steps` steps per env."""
    from diamond_pl.data.collector import Collector
    from diamond_pl.data.store import EpisodeStore
    num_envs = int(ctx.args["eval_envs"])
    cap = int(ctx.args["eval_steps"]) * num_envs
    env = agent.env_spec.make(num_envs, train=False, seed=ctx.seed + 1)
    store = EpisodeStore(ctx.tmp / "eval_test", "test_dataset")
    collector = Collector(env, store, _policy(agent), epsilon=0.0, reset_every_collect=True, seed=ctx.seed)
    record: dict[str, list] = {"episodes": [], "lengths": []}

    def step():
        store.clear()
        finished = collector.collect(num_steps=cap)
        record["episodes"].append(len(finished))
        record["lengths"].extend(e["length"] for e in finished)

    return step, cap, record


PHASE_BUILDERS = {"denoiser": phase_denoiser, "rew_end": phase_rew_end, "imagination": phase_imagination,
                  "actor_critic": phase_actor_critic}


# --- one variant ------------------------------------------------------------------------------------------------------


def build_agent(cfg: dict, scale: float):
    from diamond_pl.agent import DiamondAgent

    model = {k: v for k, v in cfg["model"].items() if k != "fast"}
    model = scale_model(model, scale)
    from diamond_pl.train import ENV_KEYS

    model.pop("game", None)
    data = cfg.get("data", {})
    return DiamondAgent(env={k: data[k] for k in ENV_KEYS if k in data}, **model)


def run_variant(spec: dict) -> dict:
    """Measure the phases of one variant in this process. `spec` is plain JSON (see `main`)."""
    import torch

    from diamond_pl.perf import _DTYPES, apply_fast_paths, as_fast_path_config, eager_config, release_host_memory

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    torch.manual_seed(spec["seed"])
    cfg = load_config(spec["config"])
    data = cfg.get("data", {}) or {}
    agent = build_agent(cfg, spec["scale"])
    batch_size = int(spec["batch_size"] or data.get("batch_size", 32))
    fast_cfg = as_fast_path_config(spec["fast_cfg"]) if spec["variant"] == "fast" else None
    known_flops: dict[str, int] = dict(spec.get("flops") or {})

    counter_agent = None
    if fast_cfg is not None:
        # FLOPs are counted on an eager copy (inductor kernels bypass the counter) unless the eager variant gave them
        if any(p in NETWORK_PHASES and p not in known_flops for p in spec["phases"]):
            counter_agent = copy.deepcopy(agent).to(device)
        applied = apply_fast_paths(agent, fast_cfg, device=device)
    else:
        applied = {"config": "eager"}
    agent.to(device)
    agent.train()

    out: dict[str, Any] = {"variant": spec["variant"], "applied": {k: v for k, v in applied.items() if k != "config"},
                           "fast_cfg": spec["fast_cfg"] if fast_cfg is not None else None,
                           "batch_size": batch_size, "phases": {}, "peak_flops_samples": []}
    with tempfile.TemporaryDirectory(prefix="diamond_bench_") as tmp:
        tmp = Path(tmp)
        store = synthetic_store(tmp / "train", agent.num_actions, seed=spec["seed"])
        args = {k: spec[k] for k in ("warmup", "repeats", "env_steps", "eval_steps", "eval_envs")}
        args["fast_cfg"] = fast_cfg or eager_config()
        ctx = Context(agent, data, store, device, batch_size, tmp, spec["seed"], args)
        out["threads"] = torch.get_num_threads()
        for phase in spec["phases"]:
            release_host_memory()  # what an earlier phase freed must not count as this phase's peak RSS
            _reset_peak_rss()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            res = _run_phase(phase, ctx, agent, counter_agent, known_flops, spec, device)
            res["peak_rss_mb"] = _peak_rss_mb()
            res["peak_device_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            if res.get("flops"):
                res["achieved_flops_per_s"] = res["flops"] / res["median_s"]
                res["unit_peak_flops_per_s"], res["unit_utilisation"] = unit_utilisation(
                    res["flops"], res["times_s"], res["peak_samples"])
                res["peak_flops_per_s"] = statistics.median(res["unit_peak_flops_per_s"])
                res["utilisation"] = statistics.median(res["unit_utilisation"])
            out["peak_flops_samples"] += res.get("peak_samples", [])
            out["phases"][phase] = res
            if spec.get("progress"):
                print(f"[{spec['variant']}] {phase}: {_fmt_s(res['median_s'])} per {res['unit']}", file=sys.stderr, flush=True)
    if device.type == "cuda" and fast_cfg is not None and _DTYPES[fast_cfg.inference_dtype] is not None:
        out["peak_flops_per_s_inference_dtype"] = measure_peak_flops(device, dtype=_DTYPES[fast_cfg.inference_dtype])
    return out


def _run_phase(phase, ctx, agent, counter_agent, known_flops, spec, device) -> dict:
    warmup, repeats = int(spec["warmup"]), int(spec["repeats"])
    res: dict[str, Any] = {"unit": UNITS[phase]}
    if phase in NETWORK_PHASES:
        step = PHASE_BUILDERS[phase](ctx, agent)
        flops_fn = None
        if phase in known_flops:
            res["flops"] = known_flops[phase]
        elif counter_agent is None:  # eager: count during the first warm-up unit (its time is excluded anyway)
            flops_fn = lambda: count_flops(step)  # noqa: E731
            if warmup == 0:
                res["flops"] = count_flops(step)
        else:  # fast: one unit on the eager copy
            from diamond_pl.perf import eager_config

            eager_ctx = copy.copy(ctx)
            eager_ctx.args = dict(ctx.args, fast_cfg=eager_config())
            res["flops"] = count_flops(PHASE_BUILDERS[phase](eager_ctx, counter_agent))
        peak_fn = lambda: machine_peak_flops(device, spec.get("peak_size"))  # noqa: E731
        warm, times, cpu, flops, res["peak_samples"] = timed_units(step, warmup, repeats, device, flops_fn, peak_fn)
        if flops is not None:
            res["flops"] = flops
        per_unit = 1
    elif phase == "env":
        step, per_unit = phase_env(ctx, agent)
        warm, times, cpu, _, _ = timed_units(step, warmup, repeats, device, None)
        times, cpu, warm = [t / per_unit for t in times], [c / per_unit for c in cpu], [w / per_unit for w in warm]
    else:  # eval: time per capped repeat, converted to per-episode figures below
        step, cap, record = phase_eval(ctx, agent)
        warm, times, cpu, _, _ = timed_units(step, warmup, repeats, device, None)
        episodes = record["episodes"][warmup:]
        total_t = sum(times)
        res["steps_per_s"] = cap * len(times) / total_t if total_t else None
        res["episodes_finished"] = int(sum(episodes))
        res["mean_episode_length"] = statistics.mean(record["lengths"]) if record["lengths"] else None
        res["episodes_per_s"] = sum(episodes) / total_t if total_t else None
        res["num_envs"], res["steps_per_repeat"] = int(ctx.args["eval_envs"]), cap
        res["repeat_times_s"] = times
        # per-episode time: measured episodes where some finished, else unknown
        times = [total_t / sum(episodes)] if sum(episodes) else [float("nan")]
        cpu = [sum(cpu) / sum(episodes)] if sum(episodes) else [float("nan")]
    res["times_s"] = times
    res["median_s"] = statistics.median(times)
    res["min_s"], res["max_s"] = min(times), max(times)
    res["per_s"] = 1 / res["median_s"] if res["median_s"] and res["median_s"] == res["median_s"] else None
    res["cpu_s_median"] = statistics.median(cpu) if cpu else None
    res["warmup_s"] = warm
    res["warmup_total_s"] = sum(warm)
    if phase == "env":
        res["steps_per_repeat"] = per_unit
    return res


# --- orchestration ------------------------------------------------------------------------------------------------------


def machine_info(device: str) -> dict:
    import torch

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


def projection(variant: dict, paper_size: bool) -> dict:
    """Wall time of a full run from this variant's per-unit medians (phases not measured are left out)."""
    ph = variant["phases"]
    parts: dict[str, float] = {}
    for name in ("denoiser", "rew_end", "actor_critic"):
        if name in ph and ph[name]["median_s"] == ph[name]["median_s"]:
            parts[name] = PAPER_RUN[name] * ph[name]["median_s"]
    if "env" in ph:
        parts["env"] = PAPER_RUN["env_steps"] * ph["env"]["median_s"]
    if "eval" in ph and ph["eval"].get("episodes_finished"):
        parts["eval"] = PAPER_RUN["eval_episodes"] * ph["eval"]["median_s"]
    missing = [p for p in ("denoiser", "rew_end", "actor_critic", "env", "eval") if p not in parts]
    total = sum(parts.values())
    return {"seconds": parts, "total_s": total, "total_hours": total / 3600, "missing": missing,
            "paper_size": paper_size, "counts": PAPER_RUN}


def run(args: argparse.Namespace) -> dict:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but CUDA is not available; use --device cpu")
    cfg = load_config(args.config)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    bad = set(phases) - set(PHASES)
    if bad:
        raise UsageError(f"--phases: unknown phases {sorted(bad)}; valid: {','.join(PHASES)}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(variants) - set(VARIANTS):
        raise UsageError(f"--variants {args.variants!r}: takes {','.join(VARIANTS)}")
    on_cpu = device == "cpu"
    repeats = args.repeats if args.repeats is not None else (2 if on_cpu else 10)
    warmup = args.warmup if args.warmup is not None else (2 if on_cpu else 3)
    if repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {repeats}")
    overrides = {"cpu_threads": args.threads, "compile": args.compile, "compile_mode": args.compile_mode, "channels_last": args.channels_last,
                 "cuda_graphs": args.cuda_graphs, "inference_dtype": args.inference_dtype,
                 "host_malloc_tuning": args.host_malloc_tuning, "matmul_precision": args.matmul_precision,
                 "fused_adamw": args.fused_adamw}
    fast = fast_config(cfg, overrides)
    batch_size = args.batch_size
    data_batch = int((cfg.get("data") or {}).get("batch_size", 32))
    paper_size = args.scale == 1.0 and (batch_size is None or batch_size == 32) and data_batch == 32 \
        and Path(args.config).name != "smoke.yaml"
    spec_base = {"config": str(args.config), "device": device, "phases": phases, "repeats": repeats, "warmup": warmup,
                 "batch_size": batch_size, "scale": args.scale, "seed": args.seed, "threads": args.threads,
                 "env_steps": args.env_steps, "eval_steps": args.eval_steps, "eval_envs": args.eval_envs,
                 "fast_cfg": fast, "progress": not args.quiet, "peak_size": args.peak_size}
    result: dict[str, Any] = {
        "command": "benchmark", "config": str(args.config), "machine": machine_info(device),
        "settings": {k: spec_base[k] for k in ("phases", "repeats", "warmup", "batch_size", "scale", "seed",
                                               "threads", "env_steps", "eval_steps", "eval_envs")},
        "paper_size": paper_size, "variants": {}, "reference": REFERENCE,
    }
    result["settings"]["batch_size"] = batch_size or data_batch
    flops: dict[str, int] = {}
    for variant in variants:
        spec = dict(spec_base, variant=variant, flops=flops)
        out = run_variant(spec) if args.in_process else _run_subprocess(spec)
        for phase, res in out["phases"].items():
            if res.get("flops"):
                flops.setdefault(phase, res["flops"])
        out["projection"] = projection(out, paper_size)
        samples = out["peak_flops_samples"]
        out["peak_flops_per_s"] = {"median": statistics.median(samples), "min": min(samples), "max": max(samples)} \
            if samples else None
        result["variants"][variant] = out
    with contextlib.suppress(OSError):
        result["machine"]["loadavg_after"] = list(os.getloadavg())
    if "eager" in result["variants"] and "fast" in result["variants"]:
        e, f = result["variants"]["eager"]["phases"], result["variants"]["fast"]["phases"]
        result["speedup_fast_vs_eager"] = {p: e[p]["median_s"] / f[p]["median_s"] for p in e
                                           if p in f and f[p]["median_s"] and e[p]["median_s"] == e[p]["median_s"]}
    return result


def _run_subprocess(spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="diamond_bench_spec_") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "diamond_pl.tools.benchmark", "--worker", str(spec_path), str(out_path)]
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            raise RunError(f"the {spec['variant']} variant failed (exit code {proc.returncode}); its output is above")
        return json.loads(out_path.read_text())


# --- output -------------------------------------------------------------------------------------------------------------


def _fmt_s(s: float | None) -> str:
    if s is None or s != s:
        return "-"
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def _fmt(x, spec: str, scale: float = 1.0, none: str = "-") -> str:
    return none if x is None or x != x else format(x * scale, spec)


def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 200))
    m = result["machine"]
    console.print(f"[bold]diamond_pl benchmark[/] {result['config']}  device={m['device']}  cpu={m['cpu_model']} "
                  f"({m['logical_cpus']} logical, torch threads {m['torch_threads']})  torch {m['torch']}  "
                  f"load {m.get('loadavg')} -> {m.get('loadavg_after')}")
    s = result["settings"]
    console.print(f"batch {s['batch_size']}, scale {s['scale']}, warm-up {s['warmup']}, repeats {s['repeats']}"
                  + ("" if result["paper_size"] else "  [yellow](not paper size: projections are not the paper's)[/]"))
    ref = REFERENCE["cpu_2core"]
    table = Table(title="per-unit times (median over repeats; min..max), FLOPs and utilisation of the measured fp32 matmul peak")
    for col in ("phase", "variant", "unit", "median", "min..max", "units/s", "GFLOP/unit", "GFLOP/s", "util",
                "peak", "warm-up", "CPU s", "RSS MB", "dev MB", "ref (2-core CPU)"):
        table.add_column(col, justify="left" if col in ("phase", "variant", "unit") else "right")
    for phase in PHASES:
        for variant, out in result["variants"].items():
            r = out["phases"].get(phase)
            if r is None:
                continue
            refs = ref.get(phase, {})
            ref_txt = " / ".join(f"{k.split('_')[0]} {_fmt_s(v)}" for k, v in refs.items() if k.endswith("_s"))
            table.add_row(
                phase, f"{variant} ({out.get('threads', '?')} thr)", r["unit"], _fmt_s(r["median_s"]), f"{_fmt_s(r['min_s'])}..{_fmt_s(r['max_s'])}",
                _fmt(r.get("per_s"), ".3g"), _fmt(r.get("flops"), ".1f", 1e-9),
                _fmt(r.get("achieved_flops_per_s"), ".1f", 1e-9), _fmt(r.get("utilisation"), ".0%"),
                _fmt(r.get("peak_flops_per_s"), ".0f", 1e-9), _fmt_s(r.get("warmup_total_s")),
                _fmt(r.get("cpu_s_median"), ".3g"), _fmt(r.get("peak_rss_mb"), ".0f"), _fmt(r.get("peak_device_mb"), ".0f"),
                ref_txt,
            )
    console.print(table)
    proj = Table(title="projected full run (spec §9.4: 409,600 denoiser + 409,600 reward/end + 404,600 actor-critic "
                       "updates, 100k env steps, ~480 evaluation episodes)")
    for col in ("variant", "denoiser h", "rew_end h", "actor_critic h", "env h", "eval h", "total h", "missing"):
        proj.add_column(col, justify="right")
    for variant, out in result["variants"].items():
        p = out["projection"]
        proj.add_row(variant, *[_fmt(p["seconds"].get(k), ".1f", 1 / 3600) for k in ("denoiser", "rew_end", "actor_critic", "env", "eval")],
                     _fmt(p["total_hours"], ".1f"), ",".join(p["missing"]) or "-")
    console.print(proj)
    if "speedup_fast_vs_eager" in result:
        console.print("fast vs eager: " + ", ".join(f"{k} x{v:.2f}" for k, v in result["speedup_fast_vs_eager"].items()))


# --- command line -------------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m diamond_pl benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (its model and data sections are used)")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--variants", default="eager,fast", help="eager (every fast path off), fast, or both")
    p.add_argument("--repeats", type=int, help="timed units per phase (default: 2 on CPU, 10 on GPU)")
    p.add_argument("--warmup", type=int, help="untimed units first, incl. compilation (default: 2 on CPU, where the host heap grows over the first updates; 3 on GPU)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    p.add_argument("--batch-size", type=int, help="batch size / imagined envs (default: data.batch_size, 32)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply network widths (quick runs; 1 = config sizes)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads in the measuring process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-steps", type=int, default=100, help="real env steps per env repeat (an epoch: 100)")
    p.add_argument("--eval-steps", type=int, default=1000, help="cap on steps per eval env per repeat")
    p.add_argument("--eval-envs", type=int, default=4, help="parallel test envs in the eval phase (paper: 4)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="fast variant: torch.compile")
    p.add_argument("--compile-mode", help="fast variant: torch.compile mode")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--host-malloc-tuning", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--inference-dtype", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--matmul-precision", choices=("highest", "high", "medium"), help="fast variant (GPU: high = TF32)")
    p.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--peak-size", type=int, help="side of the square fp32 matmul that measures the peak "
                   "(default: 2048 on CPU, 8192 on GPU)")
    p.add_argument("--in-process", action="store_true", help="run the variants in this process (no subprocesses)")
    p.add_argument("--quiet", action="store_true", help="no progress lines, no table")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:  # internal: one variant in a fresh process
        spec_path, out_path = argv[1], argv[2]
        out = run_variant(json.loads(Path(spec_path).read_text()))
        Path(out_path).write_text(json.dumps(out))
        return
    args = parser().parse_args(argv)
    result = run(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    if not args.quiet:
        print_report(result)


if __name__ == "__main__":
    main()
