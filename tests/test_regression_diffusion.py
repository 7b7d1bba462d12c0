"""Regression guards for the denoiser's training loss and the sampler's configuration (reference spec §3, §5).

The expected values are computed here from the spec's formulas (not by calling the code's conditioners):
  s = sqrt(sigma^2 + offset^2); c_in = 1/sqrt(s^2 + sd^2); c_skip = sd^2/(s^2 + sd^2); c_out = s sd/sqrt(s^2 + sd^2);
  c_noise = ln(s)/4; y = x + offset eps_offset (B,C,1,1) + sigma eps; target = (x - c_skip y)/c_out;
  loss = mean over the T - n iterations of the masked MSE(F, target); iteration i+1 conditions on the quantised
  D = trunc8(clamp(c_skip y + c_out F, -1, 1)) of iteration i (§3.5, §3.7).
"""

import math

import pytest
import torch
from torch import nn

from diamond_pl.modules import denoiser as denoiser_module
from diamond_pl.modules.denoiser import denoiser_loss
from diamond_pl.diffusion.edm import Denoiser, add_training_noise, conditioners, sample_training_sigma
from diamond_pl.diffusion.sampler import DiffusionSampler, SamplerConfig, karras_sigmas, sample_next_obs
from diamond_pl.nets.denoiser_net import DenoiserNet, DenoiserNetConfig

N = 4


def spec_conditioners(sigma, sd, offset):
    s = torch.sqrt(sigma.double() ** 2 + offset**2)
    return (1 / torch.sqrt(s**2 + sd**2), sd**2 / (s**2 + sd**2), s * sd / torch.sqrt(s**2 + sd**2), torch.log(s) / 4)


def spec_quantise(x):
    return torch.floor((x.clamp(-1, 1) + 1) / 2 * 255) / 255 * 2 - 1


def tiny_denoiser(**kw) -> Denoiser:
    torch.manual_seed(0)
    net = DenoiserNet(DenoiserNetConfig(num_actions=3, cond_channels=16, depths=(1, 1), channels=(8, 8),
                                        attn_depths=(0, 1)))  # fmt: skip
    nn.init.normal_(net.conv_out.weight, std=0.1)  # zero-initialised in the paper: F would be constant
    return Denoiser(net, **kw)


def batch(b=3, t=6, size=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(b, t, 3, size, size, generator=g) * 2 - 1
    return obs, torch.randint(0, 3, (b, t), generator=g), torch.ones(b, t, dtype=torch.bool)


@pytest.mark.parametrize("sd, offset", [(0.5, 0.3), (0.7, 0.1)])
def test_conditioners_follow_the_spec_for_any_sigma_data_and_offset(sd, offset):
    sigma = torch.tensor([0.002, 0.05, 0.2831, 1.0, 5.0, 20.0])
    cs = conditioners(sigma, sd, offset)
    for got, want in zip((cs.c_in, cs.c_skip, cs.c_out, cs.c_noise), spec_conditioners(sigma, sd, offset)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    den = tiny_denoiser(sigma_data=sd, sigma_offset_noise=offset)
    cs = den.conditioners(sigma)
    for got, want in zip((cs.c_in, cs.c_skip, cs.c_out, cs.c_noise), spec_conditioners(sigma, sd, offset)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_denoiser_defaults_are_the_training_noise_of_the_spec():
    den = tiny_denoiser()
    assert (den.sigma_data, den.sigma_offset_noise) == (0.5, 0.3)
    assert (den.train_sigma_loc, den.train_sigma_scale, den.train_sigma_min, den.train_sigma_max) == (-0.4, 1.2, 0.002,
                                                                                                      20.0)


def test_training_sigma_is_clipped_to_its_range():
    sigma = sample_training_sigma(5000, loc=0.0, scale=3.0, sigma_min=0.1, sigma_max=2.0,
                                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert sigma.min().item() == pytest.approx(0.1) and sigma.max().item() == pytest.approx(2.0)
    assert (sigma == sigma.min()).float().mean() > 0.1 and (sigma == sigma.max()).float().mean() > 0.1
    inside = sigma[(sigma > 0.1) & (sigma < 2.0)]
    assert inside.log().std().item() > 0.5  # lognormal spread in between


def test_training_noise_has_std_sigma_per_pixel_and_offset_per_channel():
    b, size = 400, 16
    sigma = torch.full((b,), 2.0)
    y = add_training_noise(torch.zeros(b, 3, size, size), sigma, 0.3, generator=torch.Generator().manual_seed(0))
    per_channel_mean = y.mean(dim=(2, 3))
    pixel_noise = y - per_channel_mean[..., None, None]
    assert pixel_noise.std().item() == pytest.approx(2.0, rel=0.02)  # sigma * eps, eps ~ N(0, 1)
    # the per-channel means carry the offset noise (std 0.3) plus the mean of the pixel noise (2 / 16)
    assert per_channel_mean.std().item() == pytest.approx(math.sqrt(0.3**2 + (2.0 / size) ** 2), rel=0.1)
    assert pixel_noise.abs().max().item() < 2.0 * 6  # gaussian tails, not a ratio of gaussians


def test_training_loss_is_the_spec_two_step_loss(monkeypatch):
    """The denoiser loss on a 6-frame window equals the spec's two iterations, recomputed here from the sigmas and noisy
    frames it drew; the second iteration conditions on the first one's quantised D (not the real frame, not the
    unquantised D)."""
    sd, offset = 0.6, 0.2  # not the defaults: the denoiser's own values must be used throughout
    # a narrow clip range around the median e^-0.5 = 0.61: both bounds clip some of the draws
    den = tiny_denoiser(sigma_data=sd, sigma_offset_noise=offset, train_sigma_loc=-0.5, train_sigma_scale=1.0,
                        train_sigma_min=0.45, train_sigma_max=0.8)  # fmt: skip
    obs, act, mask = batch(b=8)
    mask[1, 5] = False  # the second target of window 1 is padding
    obs[1, 5] = 0.0
    drawn, noisy = [], []
    real_sigma, real_noise = sample_training_sigma, add_training_noise

    def record_sigma(*args, **kwargs):
        drawn.append(real_sigma(*args, **kwargs))
        return drawn[-1]

    def record_noise(x, sigma, off, generator=None):
        assert off == offset
        noisy.append(real_noise(x, sigma, off, generator))
        return noisy[-1]

    monkeypatch.setattr(denoiser_module, "sample_training_sigma", record_sigma)
    monkeypatch.setattr(denoiser_module, "add_training_noise", record_noise)
    loss, metrics = denoiser_loss(den, obs, act, mask, generator=torch.Generator().manual_seed(0))
    assert len(drawn) == len(noisy) == 2
    all_sigma = torch.cat(drawn)
    assert ((all_sigma >= 0.45) & (all_sigma <= 0.8)).all()
    assert (all_sigma == 0.45).any() and (all_sigma == 0.8).any()  # (seeded: the draws fall on both sides)

    frames = obs.clone()
    losses = []
    with torch.no_grad():
        for i in range(2):
            sigma, y, x = drawn[i], noisy[i], frames[:, i + N]
            c_in, c_skip, c_out, c_noise = (c.float()[:, None, None, None] for c in spec_conditioners(sigma, sd, offset))
            f = den.inner_model(c_in * y, c_noise.flatten(), frames[:, i : i + N] / sd, act[:, i : i + N])
            target = (x - c_skip * y) / c_out
            per_sample = ((f - target) ** 2).flatten(1).mean(1)
            m = mask[:, i + N]
            losses.append(per_sample[m].mean())
            frames[:, i + N] = spec_quantise(c_skip * y + c_out * f)
    expected = (losses[0] + losses[1]) / 2
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(metrics["loss_denoising"], expected, rtol=1e-4, atol=1e-6)


def test_denoise_accepts_float_scalar_and_batched_sigma_alike():
    den = tiny_denoiser()
    obs, act, _ = batch(b=2)  # B (2) != C (3): a batch/channel mix-up would show
    y = obs[:, -1]
    with torch.no_grad():
        ref = den.denoise(y, torch.tensor([0.7, 0.7]), obs[:, :N], act[:, :N])
        torch.testing.assert_close(den.denoise(y, 0.7, obs[:, :N], act[:, :N]), ref)
        torch.testing.assert_close(den.denoise(y, torch.tensor(0.7), obs[:, :N], act[:, :N]), ref)
        # D itself, from the spec: quantised c_skip y + c_out F
        f, _ = den.model_output(y, 0.7, obs[:, :N], act[:, :N])
        c_in, c_skip, c_out, _ = (c.float() for c in spec_conditioners(torch.tensor([0.7]), 0.5, 0.3))
        torch.testing.assert_close(ref, spec_quantise(c_skip * y + c_out * f), rtol=0, atol=1e-5)


def test_sampler_wrapper_passes_its_whole_configuration():
    """DiffusionSampler(cfg)(...) == sample_next_obs(..., every cfg field): a non-default value of any field must
    reach the sampler (the yaml's `model.sampler` section)."""
    den = tiny_denoiser()
    obs, act, _ = batch(b=2)
    prev_obs, prev_act = obs[:, :N], act[:, :N]
    cfg = SamplerConfig(num_steps=4, sigma_min=0.01, sigma_max=3.0, rho=5.0, order=2, s_churn=2.0, s_tmin=0.05,
                        s_tmax=2.0, s_noise=1.3)  # fmt: skip
    sampler = DiffusionSampler(den, cfg)
    assert sampler.cfg == cfg
    torch.testing.assert_close(torch.tensor(sampler.sigmas), karras_sigmas(4, 0.01, 3.0, 5.0))
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    got, traj = sampler(prev_obs, prev_act, initial_noise=noise, generator=torch.Generator().manual_seed(1),
                        return_trajectory=True)  # fmt: skip
    want, want_traj = sample_next_obs(den, prev_obs, prev_act, num_steps=4, order=2, s_churn=2.0, s_tmin=0.05,
                                      s_tmax=2.0, s_noise=1.3, initial_noise=noise,
                                      generator=torch.Generator().manual_seed(1), return_trajectory=True,
                                      sigma_min=0.01, sigma_max=3.0, rho=5.0)  # fmt: skip
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(traj, want_traj)
    assert torch.equal(traj[0], noise)
    # each field matters: changing any one of them changes the sample
    for field, value in (("order", 1), ("s_churn", 0.0), ("s_tmin", 0.0), ("s_tmax", 0.3), ("s_noise", 1.0),
                         ("rho", 7.0), ("num_steps", 3), ("sigma_min", 0.002), ("sigma_max", 5.0)):  # fmt: skip
        other = DiffusionSampler(den, SamplerConfig(**{**cfg.__dict__, field: value}))
        out = other(prev_obs, prev_act, initial_noise=noise, generator=torch.Generator().manual_seed(1))
        assert not torch.equal(out, got), field


def test_denoiser_module_uses_the_sampler_and_noise_model_it_is_given():
    """The agent builds DenoiserModule from the yaml's `model.sampler` and `model.diffusion` sections: imagination
    must sample with that sampler and training must use that noise model (§3.3-3.5), not the defaults."""
    cfg = SamplerConfig(num_steps=2, sigma_min=0.01, sigma_max=3.0, rho=5.0, order=2, s_churn=1.0, s_noise=1.1)
    diffusion = denoiser_module.DiffusionConfig(sigma_data=0.7, sigma_offset_noise=0.1, train_sigma_loc=-0.2,
                                                train_sigma_scale=0.9, train_sigma_min=0.01, train_sigma_max=10.0)
    torch.manual_seed(0)
    module = denoiser_module.DenoiserModule(
        DenoiserNetConfig(num_actions=3, cond_channels=16, depths=(1, 1), channels=(8, 8), attn_depths=(0, 1)),
        sampler=cfg, diffusion=diffusion,
    )  # fmt: skip
    den = module.denoiser
    nn.init.normal_(den.inner_model.conv_out.weight, std=0.1)
    assert (den.train_sigma_loc, den.train_sigma_scale, den.train_sigma_min, den.train_sigma_max) == (
        -0.2, 0.9, 0.01, 10.0)
    sigma = torch.tensor([0.05, 1.0, 4.0])
    cs = den.conditioners(sigma)
    for got, want in zip((cs.c_in, cs.c_skip, cs.c_out, cs.c_noise), spec_conditioners(sigma, 0.7, 0.1)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)

    obs, act, _ = batch(b=2)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    got = module.sample_next_obs(obs[:, :N], act[:, :N], initial_noise=noise,
                                 generator=torch.Generator().manual_seed(1))
    want = sample_next_obs(den, obs[:, :N], act[:, :N], num_steps=2, sigma_min=0.01, sigma_max=3.0, rho=5.0, order=2,
                           s_churn=1.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.1, initial_noise=noise,
                           generator=torch.Generator().manual_seed(1))  # fmt: skip
    torch.testing.assert_close(got, want)
    default = sample_next_obs(den, obs[:, :N], act[:, :N], initial_noise=noise,
                              generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(got, default)
