"""Fast paths (diamond_pl/perf/) compute what eager computes, keep checkpoints compatible, and the benchmark command
runs end to end. Tiny networks only; the torch.compile comparison is marked slow (CPU compilation takes minutes)."""

import json

import pytest
import torch

from diamond_pl.agent import DiamondAgent
from diamond_pl.diffusion.sampler import SamplerConfig
from diamond_pl.nets.actor_critic_net import ActorCriticNetConfig
from diamond_pl.modules.denoiser import denoiser_loss
from diamond_pl.nets.denoiser_net import DenoiserNetConfig
from diamond_pl.nets.rew_end_net import RewEndNetConfig
from diamond_pl.perf import (
    CudaGraphed,
    FastPathConfig,
    applied_fast_paths,
    apply_fast_paths,
    as_fast_path_config,
    calibrate_cpu_threads,
    eager_config,
    imagination_fns,
    is_compiled,
    networks,
)

QUANTUM = 2 / 255  # one step of the 8-bit grid of generated frames, in [-1, 1] units


def tiny_agent(seed: int = 0) -> DiamondAgent:
    torch.manual_seed(seed)
    agent = DiamondAgent(
        game="Breakout",
        denoiser=DenoiserNetConfig(cond_channels=16, depths=(1, 1), channels=(8, 16), attn_depths=(0, 1)),
        sampler=SamplerConfig(num_steps=3),
        rew_end_model=RewEndNetConfig(lstm_dim=16, cond_channels=8, depths=(1, 1, 1, 1), channels=(8, 8, 8, 8)),
        actor_critic=ActorCriticNetConfig(lstm_dim=16, channels=(8, 8, 16, 16)),
    )
    # give the zero-initialised layers weights, so that every path of every network contributes to the outputs
    with torch.no_grad():
        for name, p in agent.named_parameters():
            if p.abs().sum() == 0 and p.ndim > 1:
                p.normal_(0, 0.05)
    return agent.eval()


def inputs(seed: int = 1, b: int = 3):
    g = torch.Generator().manual_seed(seed)
    return {
        "prev_obs": torch.rand(b, 4, 3, 64, 64, generator=g) * 2 - 1,
        "prev_act": torch.randint(0, 4, (b, 4), generator=g),
        "noisy": torch.randn(b, 3, 64, 64, generator=g),
        "noise": torch.randn(b, 3, 64, 64, generator=g),
        "obs": torch.rand(b, 5, 3, 64, 64, generator=g) * 2 - 1,
        "act": torch.randint(0, 4, (b, 5), generator=g),
    }


@torch.no_grad()
def outputs(agent: DiamondAgent, x: dict) -> dict[str, torch.Tensor]:
    den = agent.denoiser.denoiser
    sigma = torch.tensor([0.05, 0.7, 4.0])
    f, _ = den.model_output(x["noisy"], sigma, x["prev_obs"], x["prev_act"])
    sample = agent.denoiser.sample_next_obs(x["prev_obs"], x["prev_act"], initial_noise=x["noise"])
    logits_rew, logits_end, (h, c) = agent.rew_end_model.net(x["obs"][:, :-1], x["act"][:, :-1], x["obs"][:, 1:])
    ac_logits, ac_value, (ah, ac) = agent.actor_critic.net(x["obs"][:, 0])
    return {"F": f, "D": den.denoise(x["noisy"], sigma, x["prev_obs"], x["prev_act"]), "sample": sample,
            "logits_rew": logits_rew, "logits_end": logits_end, "rew_end_h": h,
            "ac_logits": ac_logits, "ac_value": ac_value, "ac_h": ah}


def assert_close_to_eager(fast: dict, eager: dict) -> None:
    for key in ("F", "logits_rew", "logits_end", "rew_end_h", "ac_logits", "ac_value", "ac_h"):
        torch.testing.assert_close(fast[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
    # D and the sample are quantised to the 8-bit grid: float32 noise may flip a value sitting on a rounding
    # boundary by one grid step (and a flip in an early sampler step moves the later steps slightly)
    for key, max_quanta in (("D", 1), ("sample", 2)):
        diff = (fast[key] - eager[key]).abs()
        assert diff.max() <= max_quanta * QUANTUM + 1e-6, (key, diff.max())
        assert (diff > 1e-6).float().mean() < 1e-3, (key, (diff > 1e-6).float().mean())


def test_config_validation_and_dicts():
    assert as_fast_path_config(None) == FastPathConfig()
    assert as_fast_path_config({"compile": True, "compile_components": ["denoiser"]}).compile_components == ("denoiser",)
    with pytest.raises(ValueError, match="unknown FastPathConfig fields"):
        as_fast_path_config({"compiel": True})
    with pytest.raises(ValueError, match="compile_components"):
        FastPathConfig(compile_components=("policy",))
    with pytest.raises(ValueError, match="cpu_threads"):
        FastPathConfig(cpu_threads=0)
    with pytest.raises(ValueError, match="inference_dtype"):
        FastPathConfig(inference_dtype="int8")


@pytest.mark.parametrize("mode", ["inference", "always"])
def test_channels_last_matches_eager_and_keeps_state_dict(mode):
    x = inputs()
    eager = tiny_agent()
    keys = list(eager.state_dict())
    ref = outputs(eager, x)
    threads = torch.get_num_threads()
    try:
        fast = tiny_agent()
        cfg = FastPathConfig(cpu_threads=None, channels_last=mode, host_malloc_tuning=True)
        applied = apply_fast_paths(fast, cfg)
        assert applied["channels_last"] == {"mode": mode, "networks": ["denoiser", "rew_end_model", "actor_critic"]}
        conv = fast.denoiser.denoiser.inner_model.conv_in.weight
        # "always": NHWC weights; "inference": weights untouched, activations NHWC in no-grad passes only
        assert conv.is_contiguous(memory_format=torch.channels_last) == (mode == "always")
        assert list(fast.state_dict()) == keys
        for k, v in fast.state_dict().items():
            assert torch.equal(v, eager.state_dict()[k]), k
        out = outputs(fast, x)
        assert out["F"].is_contiguous(memory_format=torch.channels_last)  # the fast path is really taken
        assert_close_to_eager(out, ref)
        # idempotent; a different config on the same agent is an error
        assert apply_fast_paths(fast, cfg) is applied
        with pytest.raises(RuntimeError, match="another config"):
            apply_fast_paths(fast, eager_config())
    finally:
        torch.set_num_threads(threads)


def test_compile_in_place_keeps_state_dict_keys_and_checkpoints_load():
    """Compilation is lazy: applying it costs nothing, and keys stay those of the reference (no `_orig_mod.`)."""
    eager, fast = tiny_agent(), tiny_agent(seed=1)
    keys = list(eager.state_dict())
    apply_fast_paths(fast, FastPathConfig(cpu_threads=None, compile=True))
    assert all(is_compiled(net) for net in networks(fast).values())
    assert list(fast.state_dict()) == keys
    assert not any("_orig_mod" in k for k in fast.state_dict())
    fast.load_state_dict(eager.state_dict())  # an eager checkpoint loads into the compiled agent, and back
    eager.load_state_dict(fast.state_dict())
    for k, v in fast.state_dict().items():
        assert torch.equal(v, eager.state_dict()[k]), k


def test_fused_adamw_reaches_the_optimisers():
    agent = tiny_agent()
    apply_fast_paths(agent, FastPathConfig(cpu_threads=None, fused_adamw=True))
    opts, _ = agent.configure_optimizers()
    assert all(o.defaults["fused"] for o in opts)


def test_training_step_channels_last_matches_eager():
    """One denoiser loss + backward: gradients agree within float32 noise (channels_last also in backward)."""
    x = inputs(b=2)
    grads = []
    for cfg in (eager_config(), FastPathConfig(cpu_threads=None, channels_last="always")):
        agent = tiny_agent()
        apply_fast_paths(agent, cfg)
        torch.manual_seed(5)  # same training sigmas and noise
        loss, _ = denoiser_loss(agent.denoiser.denoiser, x["obs"], x["act"], torch.ones(2, 5, dtype=torch.bool))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in agent.denoiser.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-3, atol=1e-5, msg=n)


def test_imagination_fns_are_plain_off_gpu():
    agent = tiny_agent()
    next_obs_fn, rew_end_fn = imagination_fns(agent, FastPathConfig(cuda_graphs=True, inference_dtype=None))
    if not torch.cuda.is_available():
        assert next_obs_fn == agent.denoiser.sample_next_obs and rew_end_fn is agent.rew_end_model.net
    # the CUDA-graph wrapper runs CPU tensors eagerly
    wrapped = CudaGraphed(lambda a, b: (a + b, None))
    out, none = wrapped(torch.ones(2), torch.ones(2))
    assert torch.equal(out, torch.full((2,), 2.0)) and none is None and not wrapped.graphs


def test_calibrate_cpu_threads_sets_a_candidate():
    threads = torch.get_num_threads()
    try:
        best, medians = calibrate_cpu_threads([1, threads], rounds=1)
        assert best in (1, threads) and torch.get_num_threads() == best
        assert set(medians) == {1, threads}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_compiled_matches_eager():
    """torch.compile (inductor) of all three networks: outputs within float32 noise of eager (minutes on a CPU)."""
    from torch._dynamo.utils import counters

    x = inputs()
    ref = outputs(tiny_agent(), x)
    fast = tiny_agent()
    apply_fast_paths(fast, FastPathConfig(cpu_threads=None, compile=True))
    before = counters["frames"]["ok"]
    out = outputs(fast, x)
    assert counters["frames"]["ok"] > before  # really compiled (in-place compile of a Sequential once ran eager)
    assert_close_to_eager(out, ref)


def test_benchmark_command_end_to_end(tmp_path):
    from diamond_pl.cli import main

    out = tmp_path / "bench.json"
    main(["benchmark", "--config", "configs/smoke.yaml", "--json", str(out), "--repeats", "1", "--warmup", "1",
          "--batch-size", "2", "--threads", "1", "--no-compile", "--in-process", "--env-steps", "20",
          "--eval-episodes", "1", "--eval-envs", "1", "--peak-size", "256", "--quiet"])
    result = json.loads(out.read_text())
    assert result["paper_size"] is False
    assert {"cpu_model", "logical_cpus", "torch", "torch_threads", "loadavg"} <= set(result["machine"])
    assert set(result["variants"]) == {"eager", "fast"}
    for variant in result["variants"].values():
        phases = variant["phases"]
        assert set(phases) == {"denoiser", "rew_end", "imagination", "actor_critic", "env", "eval"}
        for name, r in phases.items():
            assert {"unit", "times_s", "median_s", "min_s", "max_s", "warmup_s", "peak_rss_mb", "peak_device_mb",
                    "cpu_s_median"} <= set(r), name
            assert r["peak_rss_mb"] > 0
        for name in ("denoiser", "rew_end", "imagination", "actor_critic"):
            r = phases[name]
            assert r["median_s"] > 0 and r["flops"] > 0 and 0 < r["utilisation"], name
            assert r["min_s"] <= r["median_s"] <= r["max_s"]
            # the peak is sampled around every timed unit, and each unit is compared with the peak of its moment
            assert len(r["peak_samples"]) == len(r["times_s"]) + 1 and min(r["peak_samples"]) > 0
            assert r["utilisation"] == pytest.approx(r["flops"] / r["median_s"] / r["peak_flops_per_s"])
        assert phases["env"]["steps_per_repeat"] == 20
        assert {"steps_per_s", "episodes_finished", "episodes_per_s"} <= set(phases["eval"])
        assert phases["eval"]["episodes_finished"] == 1  # one evaluation of --eval-episodes per timed repeat
        assert variant["threads"] == 1  # both variants at the same thread count
        proj = variant["projection"]
        assert {"seconds", "total_s", "total_hours", "missing", "paper_size", "counts"} <= set(proj)
        assert proj["counts"]["denoiser"] == 409_600 and proj["counts"]["actor_critic"] == 404_600
    # the same FLOPs are reported for both variants (counted once, on eager networks)
    for name in ("denoiser", "rew_end", "imagination", "actor_critic"):
        assert result["variants"]["eager"]["phases"][name]["flops"] == result["variants"]["fast"]["phases"][name]["flops"]
    assert result["variants"]["fast"]["applied"]["channels_last"]


def test_compiling_for_a_cpu_without_a_vector_isa_warns(monkeypatch):
    """Inductor then writes scalar kernels (and caches them): the user is told why compile is slow and what to do."""
    import torch._inductor.cpu_vec_isa as vec_isa

    from diamond_pl.perf import check_cpu_vector_isa

    monkeypatch.setattr(vec_isa, "pick_vec_isa", lambda: vec_isa.InvalidVecISA())
    with pytest.warns(UserWarning, match="no usable vector instruction set.*re.py.*TORCHINDUCTOR_CACHE_DIR"):
        assert check_cpu_vector_isa() is None
    with pytest.warns(UserWarning, match="no usable vector"):
        applied = apply_fast_paths(tiny_agent(), FastPathConfig(cpu_threads=None, channels_last=False, compile=True),
                                   device="cpu")
    assert applied["cpu_vector_isa"] is None and applied["compiled"]

    class FakeAVX2:
        def __bool__(self):
            return True

        def __str__(self):
            return "avx2"

    monkeypatch.setattr(vec_isa, "pick_vec_isa", FakeAVX2)
    assert check_cpu_vector_isa() == "avx2"


def test_unit_utilisation_pairs_each_unit_with_the_peak_around_it():
    from diamond_pl.perf.measure import unit_utilisation

    # two units of 100 FLOPs: 1 s between peaks 200 and 100 FLOP/s, then 2 s between 100 and 100
    around, util = unit_utilisation(100, [1.0, 2.0], [200.0, 100.0, 100.0])
    assert around == [150.0, 100.0]
    assert util == pytest.approx([100 / 150, 50 / 100])


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="nn.LSTM runs fused on CPU only with oneDNN")
@pytest.mark.parametrize("batch_first", [True, False])
def test_fused_lstm_flops_equal_those_of_its_matmuls(batch_first):
    """torch's counter sees 0 FLOPs in the fused LSTM kernel; ours must count what the unfused LSTM's matmuls count."""
    from diamond_pl.perf.flops import count_flops

    lstm = torch.nn.LSTM(16, 8, num_layers=2, batch_first=batch_first)
    x = torch.randn(3, 5, 16, requires_grad=True)
    batch = 3 if batch_first else 5

    def forward():
        lstm(x)

    def forward_backward():
        lstm(x)[0].sum().backward()

    with torch.backends.mkldnn.flags(enabled=True):  # the fused oneDNN kernel (what nn.LSTM runs on CPU)
        fused = count_flops(forward), count_flops(forward_backward)
    with torch.backends.mkldnn.flags(enabled=False):  # per-step matmuls, counted by torch's own formulas
        unfused = count_flops(forward), count_flops(forward_backward)
    assert fused[0] == unfused[0] == 2 * 15 * 4 * 8 * ((16 + 8) + (8 + 8))
    # the unfused backward skips the first step's recurrent input gradient (h0 is a constant); the fused kernel runs it
    assert fused[1] - unfused[1] == 2 * batch * 4 * 8 * 8 * 2


def test_rnn_flops_from_weight_shapes():
    from diamond_pl.perf.flops import rnn_flops

    # cuDNN's weight list of a bidirectional one-layer LSTM (input 16, hidden 8): per direction w_ih, w_hh, b_ih, b_hh
    weights = [(32, 16), (32, 8), (32,), (32,)] * 2
    assert rnn_flops((7, 4, 16), weights) == 2 * 28 * 2 * 32 * (16 + 8)
    assert rnn_flops((7, 4, 16), weights, backward=True) == 2 * rnn_flops((7, 4, 16), weights)


def test_host_heap_is_released_when_the_trained_component_changes(monkeypatch):
    import diamond_pl.agent as agent_module

    calls = []
    monkeypatch.setattr(agent_module, "release_host_memory", lambda: calls.append(1) or True)
    agent = tiny_agent()
    assert applied_fast_paths(agent) is None
    applied = apply_fast_paths(agent, FastPathConfig(cpu_threads=None, channels_last=False), device="cpu")
    assert applied_fast_paths(agent) is applied
    agent._on_component_switch("denoiser")  # the first block: nothing to release yet
    assert calls == []
    agent._on_component_switch("rew_end_model")
    assert len(calls) == (1 if applied.get("host_malloc_tuning") else 0)

    plain = tiny_agent()
    apply_fast_paths(plain, eager_config(), device="cpu")  # untuned heap: glibc trims by itself
    plain._on_component_switch("denoiser")
    plain._on_component_switch("actor_critic")
    assert len(calls) == (1 if applied.get("host_malloc_tuning") else 0)


def test_bf16_autocast_wrapper_returns_float32_close_to_eager():
    """The wrapper `inference_dtype` puts around imagination's world-model calls (CUDA in training), run on CPU."""
    from diamond_pl.perf.imagination import autocast_float32_out

    agent, x = tiny_agent(), inputs()
    args = (x["obs"][:, :-1], x["act"][:, :-1], x["obs"][:, 1:], None)
    ref_rew, ref_end, (ref_h, _) = agent.rew_end_model.net(*args)
    wrapped = autocast_float32_out(agent.rew_end_model.net, torch.bfloat16, device_type="cpu")
    with torch.no_grad():
        rew, end, (h, c) = wrapped(*args)
    assert rew.dtype == end.dtype == h.dtype == c.dtype == torch.float32  # the env's buffers stay float32
    assert not torch.equal(rew, ref_rew)  # really computed in bf16 ...
    torch.testing.assert_close(rew, ref_rew, rtol=0.05, atol=0.05)  # ... within bf16 precision
    torch.testing.assert_close(h, ref_h, rtol=0.05, atol=0.05)
    # tensors on another device type run the function unchanged
    assert torch.equal(autocast_float32_out(agent.rew_end_model.net, torch.bfloat16)(*args)[0], ref_rew)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphed_world_model_calls_match_eager_on_gpu():
    agent = tiny_agent().cuda()
    x = {k: v.cuda() for k, v in inputs().items()}
    net = agent.rew_end_model.net
    graphed = CudaGraphed(net)
    args = (x["obs"][:, :-1], x["act"][:, :-1], x["obs"][:, 1:], None)
    with torch.no_grad():
        for got, want in zip(graphed(*args)[:2], net(*args)[:2]):
            torch.testing.assert_close(got, want)
        assert len(graphed.graphs) == 1
        # new values of the same shapes replay the same graph on the new inputs; a state tuple is a new signature
        _, _, hx_cx = net(*args)
        args2 = (x["obs"][:, 1:], x["act"][:, 1:], x["obs"][:, :-1], hx_cx)
        for got, want in zip(graphed(*args2)[:2], net(*args2)[:2]):
            torch.testing.assert_close(got, want)
        assert len(graphed.graphs) == 2
        for p in net.parameters():  # in-place updates (the optimiser's) are seen by later replays
            p.mul_(0.5)
        for got, want in zip(graphed(*args2)[:2], net(*args2)[:2]):
            torch.testing.assert_close(got, want)
        # the sampler draws fresh noise inside the graph at every replay
        sample = CudaGraphed(agent.denoiser.sample_next_obs)
        a, b = sample(x["prev_obs"], x["prev_act"]), sample(x["prev_obs"], x["prev_act"])
        assert a.shape == x["prev_obs"][:, -1].shape and not torch.equal(a, b)


def test_benchmark_runs_both_variants_at_one_thread_count(monkeypatch):
    """The eager / fast ratio must not compare thread settings: the count is decided once, before the variants."""
    from diamond_pl.tools import benchmark

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("diamond_pl.perf.threads.calibrate_cpu_threads", lambda: (1, {1: 0.1, 2: 0.5}))
    assert benchmark.choose_threads(None, "auto") == (1, {1: 0.1, 2: 0.5})
    assert benchmark.choose_threads(3, "auto") == (3, None)  # --threads wins
    assert benchmark.choose_threads(None, 2) == (2, None)  # the config's fixed count
