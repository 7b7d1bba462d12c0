"""`python -m diamond_pl benchmark --config configs/breakout.yaml`: throughput of every phase of a DIAMOND run.

Builds the agent at the config's sizes on random data of the right shapes and measures, per variant (`eager`: every
fast path off; `fast`: the config's `model.fast` section, else `FastPathConfig()`, then the command-line overrides),
both at the same CPU thread count (`--threads`, else the fast config's, else calibrated once, up front):

  phase         unit      what one unit is
  denoiser      update    sample a batch, 2-iteration EDM loss (T = n + 2), backward, clip, AdamW, lr schedule
  rew_end       update    sample a batch, reward/end loss over T = 19 frames (18 transitions), backward, clip, AdamW
  imagination   step      policy step + world-model step for num_envs envs (3 denoising steps, reward/end step)
  actor_critic  update    15 imagined steps with gradient, lambda returns, loss, backward, clip, AdamW
  env           step      one real train-env step while acting (one epoch's collection: loop.steps_per_epoch steps)
  eval          episode   one evaluation: loop.eval_episodes test games on loop.num_eval_envs parallel envs

Per phase: median / min / max seconds per unit over --repeats, after --warmup units (reported apart: they include
compilation); FLOPs per unit (`diamond_pl.perf.flops`, counted once on eager networks, outside the timed units),
achieved FLOP/s and utilisation = achieved / the fp32 matmul peak sampled right before and after every timed unit
(median over the units: the load of a shared machine changes within a phase); CPU seconds per unit; peak host RSS and
device memory. Then a projection of a full paper run (spec §9.4). Each variant runs in its own subprocess, so that
process-wide settings (malloc, compile caches) do not leak between variants (`--in-process`: in this one).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch
# torch and everything that imports it are imported inside the functions that use them: `benchmark --help` stays fast

from diamond_pl.errors import RunError, UsageError

PHASES = ("denoiser", "rew_end", "imagination", "actor_critic", "env", "eval")
NETWORK_PHASES = ("denoiser", "rew_end", "imagination", "actor_critic")
UNITS = {"denoiser": "update", "rew_end": "update", "imagination": "step", "actor_critic": "update",
         "env": "step", "eval": "episode"}
VARIANTS = ("eager", "fast")
NETWORKS = ("denoiser", "rew_end_model", "actor_critic")

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


def _net_defaults(key: str) -> dict:
    from diamond_pl.nets.actor_critic_net import ActorCriticNetConfig
    from diamond_pl.nets.denoiser_net import DenoiserNetConfig
    from diamond_pl.nets.rew_end_net import RewEndNetConfig

    cls = {"denoiser": DenoiserNetConfig, "rew_end_model": RewEndNetConfig, "actor_critic": ActorCriticNetConfig}[key]
    return asdict(cls())


def is_paper_size(model: dict, batch_size: int) -> bool:
    """Batch 32 and every network size as in the paper (the network configs' defaults)."""
    def same(a, b) -> bool:
        return list(a) == list(b) if isinstance(a, (list, tuple)) else a == b

    for key in NETWORKS:
        defaults = _net_defaults(key)
        if any(not same(v, defaults[f]) for f, v in (model.get(key) or {}).items() if f in defaults and f != "num_actions"):
            return False
    return batch_size == 32


def _scaled(c: int, scale: float, multiple: int) -> int:
    return max(multiple, int(round(c * scale / multiple)) * multiple)


def scale_model(model: dict, scale: float) -> dict:
    """Widths (channels, conditioning, LSTM) times `scale`, for quick runs. Depths and resolutions are unchanged."""
    if scale == 1.0:
        return model
    model = copy.deepcopy(model)
    n = int(model.get("denoiser", {}).get("num_steps_conditioning", 4))
    for key in NETWORKS:
        sub = model.setdefault(key, {})
        defaults = _net_defaults(key)
        sub["channels"] = [_scaled(c, scale, 8) for c in sub.get("channels", defaults["channels"])]
        if "cond_channels" in defaults:
            sub["cond_channels"] = _scaled(sub.get("cond_channels", defaults["cond_channels"]), scale, math.lcm(8, 2 * n))
        if "lstm_dim" in defaults:
            sub["lstm_dim"] = _scaled(sub.get("lstm_dim", defaults["lstm_dim"]), scale, 8)
    return model


def build_agent(cfg: dict, scale: float):
    from diamond_pl.agent import DiamondAgent
    from diamond_pl.train import ENV_KEYS

    model = scale_model({k: v for k, v in cfg["model"].items() if k != "fast"}, scale)
    model.pop("game", None)
    data = cfg.get("data") or {}
    return DiamondAgent(env={k: data[k] for k in ENV_KEYS if k in data}, **model)


def choose_threads(requested: int | None, fast_cpu_threads: int | str | None) -> tuple[int, dict | None]:
    """The CPU thread count both variants run with, and the calibration's timings if it decided. Both variants use the
    same count so that the eager / fast ratio measures the code paths, not the thread setting: on the 2-core machine,
    loaded by other processes, the eager smoke-size imagination step took 18-24x and the evaluation episode 34-48x
    longer with torch's default 2 threads than with 1, which is what made eager look 39x slower than fast."""
    import torch

    from diamond_pl.perf.threads import calibrate_cpu_threads

    if requested is not None:
        return requested, None
    if isinstance(fast_cpu_threads, int):
        return fast_cpu_threads, None
    if fast_cpu_threads == "auto" and "OMP_NUM_THREADS" not in os.environ:
        return calibrate_cpu_threads()
    return torch.get_num_threads(), None  # torch's own count (OMP_NUM_THREADS, if set, decided it)


# --- data ------------------------------------------------------------------------------------------------------------


def synthetic_store(directory: Path, num_actions: int, img_size: int = 64, num_episodes: int = 16, length: int = 120,
                    seed: int = 0):
    """Random uint8 episodes (a few rewards and ends), in RAM only."""
    import numpy as np

    from diamond_pl.data.episode import Episode
    from diamond_pl.data.store import EpisodeStore

    rng = np.random.default_rng(seed)
    store = EpisodeStore(directory, "train_dataset")
    store.persist = False
    for _ in range(num_episodes):
        obs = rng.integers(0, 256, size=(length, 3, img_size, img_size), dtype=np.uint8)
        act = rng.integers(0, num_actions, size=length)
        rew = rng.choice(np.array([-1.0, 0.0, 1.0], dtype=np.float32), size=length, p=[0.05, 0.85, 0.1])
        end = np.zeros(length, bool)
        end[-1] = True
        final = rng.integers(0, 256, size=(3, img_size, img_size), dtype=np.uint8)
        store.add_episode(Episode(obs, act, rew, end, np.zeros(length, bool), final))
    return store


# --- phases: each builder returns the function that runs one unit ------------------------------------------------------


class Context:
    def __init__(self, data: dict, loop: dict, store, device, batch_size: int, tmp: Path, seed: int, spec: dict,
                 fast_cfg) -> None:
        self.data, self.loop, self.store, self.device, self.batch_size = data, loop, store, device, batch_size
        self.tmp, self.seed, self.spec, self.fast_cfg = tmp, seed, spec, fast_cfg

    @property
    def units(self) -> int:
        """Units a phase runs: warm-up, timed, and one to count FLOPs."""
        return int(self.spec["warmup"]) + int(self.spec["repeats"]) + 1


def _update(module, loss_fn: Callable[[], Any]) -> Callable[[], None]:
    """One optimiser step of a component, as training does it: loss, backward, clip, AdamW, lr schedule."""
    import torch

    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]

    def step():
        loss, _ = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), module.optim_cfg.max_grad_norm)
        opt.step()
        sched.step()

    return step


def phase_denoiser(ctx: Context, agent) -> Callable[[], None]:
    from diamond_pl.data.sampler import SegmentSampler

    sampler = SegmentSampler(ctx.store, ctx.batch_size, int(ctx.data.get("denoiser_seq_len", 6)), seed=ctx.seed,
                             with_final_obs=bool(ctx.data.get("denoiser_final_obs", False)))
    return _update(agent.denoiser, lambda: agent.denoiser.loss(sampler.sample().to(ctx.device)))


def phase_rew_end(ctx: Context, agent) -> Callable[[], None]:
    from diamond_pl.data.sampler import SegmentSampler

    sampler = SegmentSampler(ctx.store, ctx.batch_size, int(ctx.data.get("rew_end_seq_len", 19)),
                             can_sample_beyond_end=True, seed=ctx.seed)
    return _update(agent.rew_end_model, lambda: agent.rew_end_model.loss(sampler.sample().to(ctx.device), "train"))


def _world_model_env(ctx: Context, agent, steps: int):
    """A WorldModelEnv with the agent's networks and enough preloaded contexts for `steps` steps (no refill)."""
    import torch

    from diamond_pl.data.sampler import SegmentSampler
    from diamond_pl.envs.world_model_env import WorldModelEnv
    from diamond_pl.perf import imagination_fns

    sampler = SegmentSampler(ctx.store, ctx.batch_size, agent.denoiser.num_steps_conditioning, seed=ctx.seed)
    # each imagined step uses at most num_envs new contexts
    cfg = replace(agent.world_model_env_cfg, num_envs=ctx.batch_size,
                  num_batches_to_preload=min(agent.world_model_env_cfg.num_batches_to_preload, steps + 2))
    next_obs_fn, rew_end_fn = imagination_fns(agent, ctx.fast_cfg)
    env = WorldModelEnv(next_obs_fn, rew_end_fn, sampler.sample, cfg, device=ctx.device,
                        generator=torch.Generator(ctx.device).manual_seed(ctx.seed))
    env.refill_contexts()
    return env


def phase_imagination(ctx: Context, agent) -> Callable[[], None]:
    import torch

    from diamond_pl.envs.env_loop import policy_step

    env = _world_model_env(ctx, agent, ctx.units)
    net, temperature = agent.actor_critic.net, agent.actor_critic.loss_cfg.temperature
    state = {"obs": env.reset(), "hx_cx": None}

    @torch.no_grad()
    def step():
        act, _, _, state["hx_cx"] = policy_step(net, state["obs"], state["hx_cx"], temperature)
        state["obs"] = env.step(act).obs

    return step


def phase_actor_critic(ctx: Context, agent) -> Callable[[], None]:
    module = agent.actor_critic
    env_loop = module.make_env_loop(_world_model_env(ctx, agent, ctx.units * module.loss_cfg.backup_every))
    return _update(module, lambda: module.loss(env_loop))


def _collector(ctx: Context, agent, name: str, num_envs: int, train: bool):
    from diamond_pl.data.collector import Collector
    from diamond_pl.data.store import EpisodeStore
    from diamond_pl.modules.actor_critic import ActorCriticPolicy

    env = agent.env_spec.make(num_envs, train=train, seed=ctx.seed + (0 if train else 1))
    store = EpisodeStore(ctx.tmp / name, "train_dataset" if train else "test_dataset")
    policy = ActorCriticPolicy(agent.actor_critic.net, agent.actor_critic.loss_cfg.temperature)
    return store, Collector(env, store, policy, epsilon=0.01 if train else 0.0, reset_every_collect=not train,
                            seed=ctx.seed)


def phase_env(ctx: Context, agent) -> tuple[Callable[[], None], int]:
    """One repeat = one epoch's collection on 1 train env (epsilon 0.01), episodes saved to disk; unit = one step."""
    steps = int(ctx.spec["env_steps"])
    _, collector = _collector(ctx, agent, "env_train", 1, train=True)
    return lambda: collector.collect(num_steps=steps), steps


def phase_eval(ctx: Context, agent) -> tuple[Callable[[], None], dict]:
    """One repeat = one evaluation: `eval_episodes` full test games on `eval_envs` parallel envs; unit = one episode."""
    store, collector = _collector(ctx, agent, "eval_test", int(ctx.spec["eval_envs"]), train=False)
    record: dict[str, list] = {"episodes": [], "lengths": []}

    def step():
        store.clear()
        finished = collector.collect(num_episodes=int(ctx.spec["eval_episodes"]))
        record["episodes"].append(len(finished))
        record["lengths"].append([e["length"] for e in finished])

    return step, record


PHASE_BUILDERS = {"denoiser": phase_denoiser, "rew_end": phase_rew_end, "imagination": phase_imagination,
                  "actor_critic": phase_actor_critic}


# --- one variant ------------------------------------------------------------------------------------------------------


def run_variant(spec: dict) -> dict:
    """Measure the phases of one variant in this process. `spec` is plain JSON (see `run`)."""
    import torch

    from diamond_pl.perf import INFERENCE_DTYPES, apply_fast_paths, as_fast_path_config, eager_config, release_host_memory
    from diamond_pl.perf.measure import matmul_flops_per_s, peak_rss_mb, reset_peak_rss

    if spec["device"] == "cpu":
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    torch.manual_seed(spec["seed"])
    cfg = load_config(spec["config"])
    agent = build_agent(cfg, spec["scale"])
    fast_cfg = as_fast_path_config(spec["fast_cfg"]) if spec["variant"] == "fast" else None
    known_flops: dict[str, int] = dict(spec.get("flops") or {})

    counter_agent = None  # an eager copy to count FLOPs on (inductor kernels bypass the counter)
    if fast_cfg is not None and any(p in NETWORK_PHASES and p not in known_flops for p in spec["phases"]):
        counter_agent = copy.deepcopy(agent).to(device)
    applied = apply_fast_paths(agent, fast_cfg, device=device) if fast_cfg is not None else {"config": "eager"}
    agent.to(device).train()

    out: dict[str, Any] = {"variant": spec["variant"], "applied": {k: v for k, v in applied.items() if k != "config"},
                           "fast_cfg": spec["fast_cfg"] if fast_cfg is not None else None,
                           "batch_size": spec["batch_size"], "threads": torch.get_num_threads(), "phases": {},
                           "peak_flops_samples": []}
    with tempfile.TemporaryDirectory(prefix="diamond_bench_") as tmp:
        store = synthetic_store(Path(tmp) / "train", agent.num_actions, agent.env_spec.img_size, seed=spec["seed"])
        ctx = Context(cfg.get("data") or {}, cfg.get("loop") or {}, store, device, spec["batch_size"], Path(tmp),
                      spec["seed"], spec, fast_cfg or eager_config())
        for phase in spec["phases"]:
            release_host_memory()  # what an earlier phase freed must not count as this phase's peak RSS
            reset_peak_rss()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            res = _run_phase(phase, ctx, agent, counter_agent, known_flops)
            res["peak_rss_mb"] = peak_rss_mb()
            res["peak_device_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            out["peak_flops_samples"] += res.get("peak_samples", [])
            out["phases"][phase] = res
            if spec.get("progress"):
                print(f"[{spec['variant']}] {phase}: {_fmt_s(res['median_s'])} per {res['unit']}", file=sys.stderr, flush=True)
    if device.type == "cuda" and fast_cfg is not None and INFERENCE_DTYPES[fast_cfg.inference_dtype] is not None:
        out["peak_flops_per_s_inference_dtype"] = matmul_flops_per_s(
            device, spec["peak_size"], dtype=INFERENCE_DTYPES[fast_cfg.inference_dtype])
    return out


def _run_phase(phase: str, ctx: Context, agent, counter_agent, known_flops: dict) -> dict:
    from diamond_pl.perf import eager_config
    from diamond_pl.perf.flops import count_flops
    from diamond_pl.perf.measure import peak_flops_per_s, timed_units, unit_utilisation

    warmup, repeats, device = int(ctx.spec["warmup"]), int(ctx.spec["repeats"]), ctx.device
    res: dict[str, Any] = {"unit": UNITS[phase]}
    if phase in NETWORK_PHASES:
        step = PHASE_BUILDERS[phase](ctx, agent)
        if phase in known_flops:
            res["flops"] = known_flops[phase]
        elif counter_agent is None:  # eager: one extra unit under the counter, outside warm-up and timing
            res["flops"] = count_flops(step)
        else:
            eager_ctx = copy.copy(ctx)
            eager_ctx.fast_cfg = eager_config()
            res["flops"] = count_flops(PHASE_BUILDERS[phase](eager_ctx, counter_agent))
        timing = timed_units(step, warmup, repeats, device, lambda: peak_flops_per_s(device, ctx.spec["peak_size"]))
        res["unit_peak_flops_per_s"], res["unit_utilisation"] = unit_utilisation(
            res["flops"], timing["times_s"], timing["peak_samples"])
        res["peak_flops_per_s"] = statistics.median(res["unit_peak_flops_per_s"])
        res["utilisation"] = statistics.median(res["unit_utilisation"])
        res["peak_samples"] = timing["peak_samples"]
        per_unit = [1] * repeats
    elif phase == "env":
        step, steps = phase_env(ctx, agent)
        timing = timed_units(step, warmup, repeats, device)
        res["steps_per_repeat"], per_unit = steps, [steps] * repeats
    else:  # eval: per-episode figures from each evaluation's time and episode count
        step, record = phase_eval(ctx, agent)
        timing = timed_units(step, warmup, repeats, device)
        per_unit = record["episodes"][warmup:]
        lengths = [n for rep in record["lengths"][warmup:] for n in rep]
        total_s = sum(timing["times_s"])
        res.update(num_envs=int(ctx.spec["eval_envs"]), episodes_per_repeat=int(ctx.spec["eval_episodes"]),
                   repeat_times_s=timing["times_s"], episodes_finished=sum(per_unit),
                   mean_episode_length=statistics.mean(lengths), steps_per_s=sum(lengths) / total_s,
                   episodes_per_s=sum(per_unit) / total_s)
    times = [t / n for t, n in zip(timing["times_s"], per_unit)]
    res.update(times_s=times, median_s=statistics.median(times), min_s=min(times), max_s=max(times),
               cpu_s_median=statistics.median(c / n for c, n in zip(timing["cpu_s"], per_unit)),
               warmup_s=timing["warmup_s"], warmup_total_s=sum(timing["warmup_s"]))
    res["per_s"] = 1 / res["median_s"]
    if "flops" in res:
        res["achieved_flops_per_s"] = res["flops"] / res["median_s"]
    return res


# --- orchestration ------------------------------------------------------------------------------------------------------


def projection(variant: dict, paper_size: bool) -> dict:
    """Wall time of a full run from this variant's per-unit medians (phases not measured are left out)."""
    ph = variant["phases"]
    counts = {"denoiser": PAPER_RUN["denoiser"], "rew_end": PAPER_RUN["rew_end"],
              "actor_critic": PAPER_RUN["actor_critic"], "env": PAPER_RUN["env_steps"], "eval": PAPER_RUN["eval_episodes"]}
    parts = {name: count * ph[name]["median_s"] for name, count in counts.items() if name in ph}
    total = sum(parts.values())
    return {"seconds": parts, "total_s": total, "total_hours": total / 3600,
            "missing": [p for p in counts if p not in parts], "paper_size": paper_size, "counts": PAPER_RUN}


def run(args: argparse.Namespace) -> dict:
    import torch

    from diamond_pl.perf import as_fast_path_config
    from diamond_pl.perf.measure import machine_info

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
    data, loop = cfg.get("data") or {}, cfg.get("loop") or {}
    batch_size = args.batch_size or int(data.get("batch_size", 32))
    paper_size = args.scale == 1.0 and is_paper_size(cfg["model"], batch_size)
    overrides = {"compile": args.compile, "compile_mode": args.compile_mode, "channels_last": args.channels_last,
                 "cuda_graphs": args.cuda_graphs, "inference_dtype": args.inference_dtype,
                 "host_malloc_tuning": args.host_malloc_tuning, "matmul_precision": args.matmul_precision,
                 "fused_adamw": args.fused_adamw}
    fast = replace(as_fast_path_config(cfg["model"].get("fast")), **{k: v for k, v in overrides.items() if v is not None})
    threads, calibration = choose_threads(args.threads, fast.cpu_threads) if on_cpu else (torch.get_num_threads(), None)
    if on_cpu:
        fast = replace(fast, cpu_threads=threads)  # decided here, for both variants
    settings = {
        "phases": phases, "repeats": repeats, "warmup": warmup, "batch_size": batch_size, "scale": args.scale,
        "seed": args.seed, "threads": threads, "threads_calibration_s": calibration,
        "env_steps": args.env_steps or int(loop.get("steps_per_epoch", 100)),
        "eval_episodes": args.eval_episodes or int(loop.get("eval_episodes", 4)),
        "eval_envs": args.eval_envs or int(loop.get("num_eval_envs", 4)),
        # a paper-size network phase is compared with a 2048^3 matmul (8192^3 on a GPU); smaller configs get a smaller
        # one, enough to reach the machine's rate, so that sampling the peak does not dominate the run
        "peak_size": args.peak_size or {(True, True): 2048, (True, False): 512, (False, True): 8192,
                                        (False, False): 2048}[(on_cpu, paper_size)],
    }
    spec_base = dict(settings, config=str(args.config), device=device, fast_cfg=asdict(fast), progress=not args.quiet)
    result: dict[str, Any] = {"command": "benchmark", "config": str(args.config), "machine": machine_info(device),
                              "settings": settings, "paper_size": paper_size, "variants": {}, "reference": REFERENCE}
    flops: dict[str, int] = {}
    for variant in variants:
        spec = dict(spec_base, variant=variant, flops=flops)
        out = run_variant(spec) if args.in_process else _run_subprocess(spec)
        flops.update({p: r["flops"] for p, r in out["phases"].items() if r.get("flops") and p not in flops})
        out["projection"] = projection(out, paper_size)
        samples = out["peak_flops_samples"]
        out["peak_flops_per_s"] = {"median": statistics.median(samples), "min": min(samples), "max": max(samples)} \
            if samples else None
        result["variants"][variant] = out
    with contextlib.suppress(OSError):
        result["machine"]["loadavg_after"] = list(os.getloadavg())
    if {"eager", "fast"} <= set(result["variants"]):
        e, f = result["variants"]["eager"]["phases"], result["variants"]["fast"]["phases"]
        result["speedup_fast_vs_eager"] = {p: e[p]["median_s"] / f[p]["median_s"] for p in e if p in f}
    return result


def _run_subprocess(spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="diamond_bench_spec_") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, "-m", "diamond_pl.tools.benchmark", "--worker", str(spec_path), str(out_path)])
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
    m, s = result["machine"], result["settings"]
    console.print(f"[bold]diamond_pl benchmark[/] {result['config']}  device={m['device']}  cpu={m['cpu_model']} "
                  f"({m['logical_cpus']} logical)  torch {m['torch']}  threads {s['threads']} (both variants)  "
                  f"load {m.get('loadavg')} -> {m.get('loadavg_after')}")
    console.print(f"batch {s['batch_size']}, scale {s['scale']}, warm-up {s['warmup']}, repeats {s['repeats']}, "
                  f"peak matmul {s['peak_size']}^3"
                  + ("" if result["paper_size"] else "  [yellow](not paper size: projections are not the paper's)[/]"))
    table = Table(title="per-unit times (median over repeats; min..max), FLOPs and utilisation of the measured fp32 matmul peak")
    for col in ("phase", "variant", "unit", "median", "min..max", "units/s", "GFLOP/unit", "GFLOP/s", "util",
                "peak", "warm-up", "CPU s", "RSS MB", "dev MB", "ref (2-core CPU)"):
        table.add_column(col, justify="left" if col in ("phase", "variant", "unit") else "right")
    for phase in PHASES:
        for variant, out in result["variants"].items():
            r = out["phases"].get(phase)
            if r is None:
                continue
            refs = REFERENCE["cpu_2core"].get(phase, {})
            table.add_row(
                phase, variant, r["unit"], _fmt_s(r["median_s"]), f"{_fmt_s(r['min_s'])}..{_fmt_s(r['max_s'])}",
                _fmt(r.get("per_s"), ".3g"), _fmt(r.get("flops"), ".1f", 1e-9),
                _fmt(r.get("achieved_flops_per_s"), ".1f", 1e-9), _fmt(r.get("utilisation"), ".0%"),
                _fmt(r.get("peak_flops_per_s"), ".0f", 1e-9), _fmt_s(r.get("warmup_total_s")),
                _fmt(r.get("cpu_s_median"), ".3g"), _fmt(r.get("peak_rss_mb"), ".0f"), _fmt(r.get("peak_device_mb"), ".0f"),
                " / ".join(f"{k.split('_')[0]} {_fmt_s(v)}" for k, v in refs.items() if k.endswith("_s")),
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
    p.add_argument("--config", required=True, help="YAML config (its model, data and loop sections are used)")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--variants", default="eager,fast", help="eager (every fast path off), fast, or both")
    p.add_argument("--repeats", type=int, help="timed units per phase (default: 2 on CPU, 10 on GPU)")
    p.add_argument("--warmup", type=int, help="untimed units first, incl. compilation (default: 2 on CPU, where the "
                   "host heap grows over the first updates; 3 on GPU)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    p.add_argument("--batch-size", type=int, help="batch size / imagined envs (default: data.batch_size)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply network widths (quick runs; 1 = config sizes)")
    p.add_argument("--threads", type=int, help="CPU threads of both variants (default: the fast config's cpu_threads; "
                   "'auto' calibrates once before the variants)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-steps", type=int, help="real env steps per env repeat (default: loop.steps_per_epoch)")
    p.add_argument("--eval-episodes", type=int, help="test episodes per eval repeat (default: loop.eval_episodes)")
    p.add_argument("--eval-envs", type=int, help="parallel test envs in the eval phase (default: loop.num_eval_envs)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="fast variant: torch.compile")
    p.add_argument("--compile-mode", help="fast variant: torch.compile mode")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--host-malloc-tuning", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--inference-dtype", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--matmul-precision", choices=("highest", "high", "medium"), help="fast variant (GPU: high = TF32)")
    p.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--peak-size", type=int, help="side of the square fp32 matmul that measures the peak (default: "
                   "2048 on CPU / 8192 on GPU at paper size, else 512 / 2048)")
    p.add_argument("--in-process", action="store_true", help="run the variants in this process (no subprocesses)")
    p.add_argument("--quiet", action="store_true", help="no progress lines, no table")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:  # internal: one variant in a fresh process
        out = run_variant(json.loads(Path(argv[1]).read_text()))
        Path(argv[2]).write_text(json.dumps(out))
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
