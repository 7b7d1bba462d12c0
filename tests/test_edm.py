"""EDM preconditioning, training loss and sampler: properties from the reference spec (§3, §5), no golden data."""

import math

import pytest
import torch
from torch import nn

from diamond_pl.diffusion import edm
from diamond_pl.modules.denoiser import denoiser_loss
from diamond_pl.diffusion.edm import Denoiser, add_training_noise, conditioners, quantise, sample_training_sigma
from diamond_pl.diffusion.sampler import DiffusionSampler, SamplerConfig, karras_sigmas, sample_next_obs
from diamond_pl.nets.denoiser_net import DenoiserNet, DenoiserNetConfig

N_COND = 4


def on_8bit_grid(x: torch.Tensor) -> bool:
    u = (x + 1) / 2 * 255
    return bool(((u - u.round()).abs() < 1e-4).all())


@pytest.fixture
def tiny_denoiser():
    torch.manual_seed(0)
    cfg = DenoiserNetConfig(num_actions=3, cond_channels=16, depths=(1, 1), channels=(8, 8), attn_depths=(0, 1))
    net = DenoiserNet(cfg)
    # the zero-initialised output conv would make F constant; give it weights so F depends on its inputs
    nn.init.normal_(net.conv_out.weight, std=0.1)
    return Denoiser(net)


def segment_batch(b=3, t=6, size=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(b, t, 3, size, size, generator=g) * 2 - 1
    act = torch.randint(0, 3, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    return obs, act, mask


# --- inner model ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_actions", [4, 18])
def test_parameter_count_at_paper_size(num_actions):
    net = DenoiserNet(DenoiserNetConfig(num_actions))
    assert sum(p.numel() for p in net.parameters()) == 4_405_699 + 64 * num_actions
    # the Fourier frequencies are a saved buffer, not a parameter
    assert "noise_emb.weight" in net.state_dict()
    assert net.noise_emb.weight.shape == (1, 128)
    assert "noise_emb.weight" not in dict(net.named_parameters())
    assert (net.conv_out.weight == 0).all()


def test_inner_model_output_shape(tiny_denoiser):
    obs, act, _ = segment_batch()
    out = tiny_denoiser.inner_model(obs[:, -1], torch.zeros(3), obs[:, :N_COND], act[:, :N_COND])
    assert out.shape == (3, 3, 8, 8)


# --- conditioners and training noise ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sigma, c_in, c_skip, c_out, c_noise",
    [
        (5.0, 0.1987, 0.00987, 0.4975, 0.4028),
        (0.2831, 1.543, 0.5950, 0.3182, -0.2214),
        (0.002, 1.715, 0.7353, 0.2573, -0.3010),
    ],
)
def test_known_conditioner_values(sigma, c_in, c_skip, c_out, c_noise):
    cs = conditioners(torch.tensor([sigma]))  # sigma_data 0.5, offset 0.3 by default
    for got, want in ((cs.c_in, c_in), (cs.c_skip, c_skip), (cs.c_out, c_out), (cs.c_noise, c_noise)):
        assert got.item() == pytest.approx(want, rel=1e-3, abs=1e-4)


def test_training_sigma_distribution():
    sigma = sample_training_sigma(200_000, generator=torch.Generator().manual_seed(0))
    assert sigma.shape == (200_000,)
    assert sigma.min() >= 0.002 and sigma.max() <= 20
    assert sigma.median().item() == pytest.approx(math.exp(-0.4), rel=0.02)  # ~0.670
    # P(sigma > 20) = P(z > (ln 20 + 0.4) / 1.2) ~ 0.23 %, all clipped onto 20
    assert (sigma == 20).float().mean().item() == pytest.approx(0.0023, abs=0.0005)


def test_offset_noise_is_constant_per_image_and_channel():
    x = torch.zeros(64, 3, 8, 8)
    y = add_training_noise(x, torch.zeros(64), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(y, y[..., :1, :1].expand_as(y))
    assert y[:, :, 0, 0].std().item() == pytest.approx(0.3, rel=0.15)


def test_quantise_truncates_onto_the_8bit_grid():
    u = torch.tensor([0.0, 0.3, 0.99, 100.7, 254.999, 255.0])
    x = u / 255 * 2 - 1
    q = quantise(x)
    assert on_8bit_grid(q)
    torch.testing.assert_close((q + 1) / 2 * 255, torch.tensor([0.0, 0.0, 0.0, 100.0, 254.0, 255.0]), atol=1e-4, rtol=0)
    assert quantise(torch.tensor([-3.0, 1.5])).tolist() == [-1.0, 1.0]  # clamped first
    x = torch.rand(1000, requires_grad=True) * 2 - 1
    q = quantise(x)
    assert not q.requires_grad
    assert ((x - q) >= -1e-6).all() and ((x - q) < 2 / 255 + 1e-6).all()


# --- loss -------------------------------------------------------------------------------------------------------------


def test_loss_runs_backward(tiny_denoiser):
    obs, act, mask = segment_batch()
    loss, metrics = denoiser_loss(tiny_denoiser, obs, act, mask, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.equal(metrics["loss_denoising"], loss.detach())
    loss.backward()
    grads = [p.grad for p in tiny_denoiser.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_loss_ignores_padded_targets(tiny_denoiser):
    obs, act, mask = segment_batch()
    mask[0, 4:] = False  # both targets of sample 0 are padding
    mask[1, 5] = False  # the second target of sample 1 is padding
    obs = obs * mask[:, :, None, None, None]

    def loss_of(o):
        with torch.no_grad():
            return denoiser_loss(tiny_denoiser, o, act, mask, generator=torch.Generator().manual_seed(0))[0]

    changed = obs.clone()
    changed[0, 4:] = torch.rand_like(changed[0, 4:])
    changed[1, 5] = torch.rand_like(changed[1, 5])
    torch.testing.assert_close(loss_of(changed), loss_of(obs), rtol=1e-6, atol=0)
    changed[2, 5] += 0.5  # a real target does count
    assert not torch.allclose(loss_of(changed), loss_of(obs))


def test_masked_mse_equals_mse_over_real_samples():
    pred, target = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    mask = torch.tensor([True, False, True, True, False])
    expected = nn.functional.mse_loss(pred[mask], target[mask])
    torch.testing.assert_close(edm.masked_mse(pred, target, mask), expected)


@pytest.mark.parametrize("t", [6, 7])
def test_later_iterations_condition_on_the_quantised_reconstruction(tiny_denoiser, t):
    obs, act, mask = segment_batch(t=t)
    calls, denoised = [], []
    hook = tiny_denoiser.inner_model.register_forward_pre_hook(lambda m, args: calls.append(args))
    original = tiny_denoiser.denoised
    tiny_denoiser.denoised = lambda *a: denoised.append(original(*a)) or denoised[-1]
    try:
        denoiser_loss(tiny_denoiser, obs, act, mask, generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
        del tiny_denoiser.denoised

    sd = tiny_denoiser.sigma_data
    assert len(calls) == t - N_COND  # T - n iterations
    for i, (_, _, prev_obs, prev_act) in enumerate(calls):
        cond = prev_obs * sd  # conditioning frames enter scaled by 1 / sigma_data
        assert torch.equal(prev_act, act[:, i : i + N_COND])
        # frames i..i+3 of the working copy: real frames, except those already replaced by D
        for j in range(N_COND):
            frame = i + j
            expected = denoised[frame - N_COND] if frame >= N_COND else obs[:, frame]
            torch.testing.assert_close(cond[:, j], expected, rtol=0, atol=1e-6)
    assert on_8bit_grid(denoised[0]) and not torch.allclose(denoised[0], obs[:, N_COND])


# --- sampler ----------------------------------------------------------------------------------------------------------


def test_karras_schedule():
    torch.testing.assert_close(karras_sigmas(3), torch.tensor([5.0, 0.28308, 0.002, 0.0]), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(karras_sigmas(1), torch.tensor([5.0, 0.0]))
    assert len(karras_sigmas(10)) == 11


def count_calls(denoiser):
    calls = []
    return calls, denoiser.inner_model.register_forward_pre_hook(lambda m, args: calls.append(None))


@pytest.mark.parametrize("order, num_steps, num_evals", [(1, 3, 3), (2, 3, 5), (2, 1, 1)])
def test_sampler_trajectory_and_evaluations(tiny_denoiser, order, num_steps, num_evals):
    obs, act, _ = segment_batch()
    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    calls, hook = count_calls(tiny_denoiser)
    sample, trajectory = sample_next_obs(
        tiny_denoiser, obs[:, :N_COND], act[:, :N_COND], num_steps, order, initial_noise=noise, return_trajectory=True
    )
    hook.remove()
    assert len(calls) == num_evals  # Heun only where sigma_next > 0: 2N - 1
    assert trajectory.shape == (num_steps + 1, 3, 3, 8, 8)
    assert torch.equal(trajectory[0], noise)  # unit-variance start, not sigma_max * noise
    assert torch.equal(trajectory[-1], sample)

    # the last step goes to sigma = 0 with Euler: x + (x - D) / sigma * (0 - sigma) = D, quantised
    sigma_last = karras_sigmas(num_steps)[-2].item()
    d_last = tiny_denoiser.denoise(trajectory[-2], sigma_last, obs[:, :N_COND], act[:, :N_COND])
    torch.testing.assert_close(sample, d_last, rtol=0, atol=1e-5)
    assert on_8bit_grid(sample)


def test_sampler_churn_and_wrapper(tiny_denoiser):
    obs, act, _ = segment_batch()
    prev_obs, prev_act = obs[:, :N_COND], act[:, :N_COND]

    def run(**kw):
        return sample_next_obs(tiny_denoiser, prev_obs, prev_act, generator=torch.Generator().manual_seed(3), **kw)

    plain = run()
    torch.testing.assert_close(run(), plain)  # deterministic given the generator
    assert not torch.equal(run(s_churn=1.0), plain)  # churn adds fresh noise
    torch.testing.assert_close(run(s_churn=1.0, s_tmin=6.0), plain)  # ... only inside [s_tmin, s_tmax]

    sampler = DiffusionSampler(tiny_denoiser, SamplerConfig(num_steps=3))
    torch.testing.assert_close(sampler(prev_obs, prev_act, generator=torch.Generator().manual_seed(3)), plain)
