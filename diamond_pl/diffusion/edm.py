"""EDM preconditioning with offset noise (Karras et al. 2022; reference spec §3.2-3.5, 3.7).

    D(y, sigma) = c_skip(s) * y + c_out(s) * F(c_in(s) * y, c_noise(s), prev_obs / sigma_data, prev_act)

Training adds offset noise (one N(0, 0.3^2) constant per image and channel) on top of sigma * eps, so the total
per-pixel noise std is s = sqrt(sigma^2 + 0.3^2). All conditioners use this effective sigma s, at training *and*
sampling time (the sampler itself adds no offset noise; the reference does this and we match it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diamond_pl.frames import float_to_uint8, uint8_to_float

SIGMA_DATA = 0.5
SIGMA_OFFSET_NOISE = 0.3


@dataclass(frozen=True)
class DiffusionConfig:
    """The denoiser's noise model (spec §3.3-3.5), paper values; the config's `model.diffusion` section."""

    sigma_data: float = SIGMA_DATA  # std of the data the preconditioning assumes (frames in [-1, 1])
    sigma_offset_noise: float = SIGMA_OFFSET_NOISE  # std of the per-image, per-channel constant added in training
    train_sigma_loc: float = -0.4  # training noise levels: ln sigma ~ N(loc, scale^2) ...
    train_sigma_scale: float = 1.2
    train_sigma_min: float = 0.002  # ... clipped to [min, max]
    train_sigma_max: float = 20.0

    def __post_init__(self) -> None:
        if self.sigma_data <= 0 or self.sigma_offset_noise < 0 or self.train_sigma_scale < 0:
            raise ValueError(f"diffusion: sigma_data must be > 0, sigma_offset_noise and train_sigma_scale >= 0: {self}")
        if not 0 < self.train_sigma_min <= self.train_sigma_max:
            raise ValueError(f"diffusion: need 0 < train_sigma_min <= train_sigma_max, got {self.train_sigma_min} "
                             f"and {self.train_sigma_max}")


# --- conditioners (each a function of the effective sigma s) ---------------------------------------------------------


def effective_sigma(sigma: Tensor, sigma_offset_noise: float = SIGMA_OFFSET_NOISE) -> Tensor:
    """Total noise std once the offset noise is added: s = sqrt(sigma^2 + offset^2)."""
    return (sigma**2 + sigma_offset_noise**2).sqrt()


def c_in(s: Tensor, sigma_data: float = SIGMA_DATA) -> Tensor:
    """Scales the noisy input to unit variance: 1 / sqrt(s^2 + sigma_data^2)."""
    return 1 / (s**2 + sigma_data**2).sqrt()


def c_skip(s: Tensor, sigma_data: float = SIGMA_DATA) -> Tensor:
    """Weight of the noisy input in D that minimises the variance of F's target: sigma_data^2 / (s^2 + sigma_data^2)."""
    return sigma_data**2 / (s**2 + sigma_data**2)


def c_out(s: Tensor, sigma_data: float = SIGMA_DATA) -> Tensor:
    """Scales F so that its target has unit variance: s * sigma_data / sqrt(s^2 + sigma_data^2) = s * sqrt(c_skip)."""
    return s * c_skip(s, sigma_data).sqrt()


def c_noise(s: Tensor) -> Tensor:
    """Noise level fed to F: ln(s) / 4."""
    return s.log() / 4


class Conditioners(NamedTuple):
    c_in: Tensor
    c_out: Tensor
    c_skip: Tensor
    c_noise: Tensor


def conditioners(
    sigma: Tensor, sigma_data: float = SIGMA_DATA, sigma_offset_noise: float = SIGMA_OFFSET_NOISE
) -> Conditioners:
    """c_in, c_out, c_skip, c_noise for noise level(s) sigma, all of sigma's shape."""
    s = effective_sigma(sigma, sigma_offset_noise)
    return Conditioners(c_in(s, sigma_data), c_out(s, sigma_data), c_skip(s, sigma_data), c_noise(s))


# --- training noise ---------------------------------------------------------------------------------------------------


def sample_training_sigma(
    n: int,
    loc: float = -0.4,
    scale: float = 1.2,
    sigma_min: float = 0.002,
    sigma_max: float = 20.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """ln sigma ~ N(loc, scale^2), clipped to [sigma_min, sigma_max] (median e^-0.4 ~ 0.670). Shape (n,)."""
    log_sigma = torch.randn(n, generator=generator, device=device) * scale + loc
    return log_sigma.exp().clamp(sigma_min, sigma_max)


def add_training_noise(
    x: Tensor, sigma: Tensor, sigma_offset_noise: float = SIGMA_OFFSET_NOISE, generator: torch.Generator | None = None
) -> Tensor:
    """y = x + offset * eps_offset + sigma * eps, with eps_offset (B, C, 1, 1): one constant per image and channel."""
    b, c = x.shape[:2]
    eps_offset = torch.randn(b, c, 1, 1, generator=generator, device=x.device, dtype=x.dtype)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + sigma_offset_noise * eps_offset + per_sample(sigma, x) * eps


def quantise(x: Tensor) -> Tensor:
    """Clamp to [-1, 1] and truncate to the 8-bit grid, as a stored frame would be. No gradient (the uint8 cast)."""
    return uint8_to_float(float_to_uint8(x.detach())).to(x.dtype)


def per_sample(c: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, ...) to broadcast over x's non-batch dims."""
    return c.reshape(c.shape[0], *([1] * (x.ndim - 1)))


# --- the denoiser -----------------------------------------------------------------------------------------------------


class Denoiser(nn.Module):
    """D(y, sigma | prev_obs, prev_act) around an inner model F (`inner_model`, state-dict keys `inner_model.*`)."""

    @classmethod
    def from_config(cls, inner_model: nn.Module, cfg: DiffusionConfig) -> Denoiser:
        return cls(inner_model, cfg.sigma_data, cfg.sigma_offset_noise, cfg.train_sigma_loc, cfg.train_sigma_scale,
                   cfg.train_sigma_min, cfg.train_sigma_max)

    def __init__(
        self,
        inner_model: nn.Module,
        sigma_data: float = SIGMA_DATA,
        sigma_offset_noise: float = SIGMA_OFFSET_NOISE,
        train_sigma_loc: float = -0.4,
        train_sigma_scale: float = 1.2,
        train_sigma_min: float = 0.002,
        train_sigma_max: float = 20.0,
    ) -> None:
        super().__init__()
        self.inner_model = inner_model
        self.sigma_data = sigma_data
        self.sigma_offset_noise = sigma_offset_noise
        # the training noise distribution (named as in DiffusionConfig; the sampler's sigma_min/max are another range)
        self.train_sigma_loc, self.train_sigma_scale = train_sigma_loc, train_sigma_scale
        self.train_sigma_min, self.train_sigma_max = train_sigma_min, train_sigma_max

    @property
    def num_steps_conditioning(self) -> int:
        return self.inner_model.cfg.num_steps_conditioning

    def conditioners(self, sigma: Tensor) -> Conditioners:
        return conditioners(sigma, self.sigma_data, self.sigma_offset_noise)

    def model_output(
        self, noisy_next_obs: Tensor, sigma: Tensor | float, prev_obs: Tensor, prev_act: Tensor
    ) -> tuple[Tensor, Conditioners]:
        """F(c_in * y, c_noise, prev_obs / sigma_data, prev_act) and the conditioners (each (B,)).

        noisy_next_obs (B, C, H, W); sigma (B,), a scalar tensor or a float; prev_obs (B, n, C, H, W) in [-1, 1].
        """
        sigma = _batch_sigma(sigma, noisy_next_obs)
        cs = self.conditioners(sigma)
        # conditioning frames are scaled by 1 / sigma_data, not by c_in: they carry no noise
        out = self.inner_model(
            noisy_next_obs * per_sample(cs.c_in, noisy_next_obs), cs.c_noise, prev_obs / self.sigma_data, prev_act
        )
        return out, cs

    def denoised(self, noisy_next_obs: Tensor, model_output: Tensor, cs: Conditioners) -> Tensor:
        """D = c_skip * y + c_out * F, quantised to the 8-bit grid (every materialised D is, spec §3.7)."""
        y = noisy_next_obs
        return quantise(per_sample(cs.c_skip, y) * y + per_sample(cs.c_out, y) * model_output)

    def denoise(self, noisy_next_obs: Tensor, sigma: Tensor | float, prev_obs: Tensor, prev_act: Tensor) -> Tensor:
        """Quantised D(y, sigma): the estimate of the clean next frame."""
        out, cs = self.model_output(noisy_next_obs, sigma, prev_obs, prev_act)
        return self.denoised(noisy_next_obs, out, cs)


def _batch_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """A float or scalar sigma -> (B,) on x's device, without a host sync."""
    if not isinstance(sigma, Tensor):
        return torch.full((x.shape[0],), sigma, device=x.device, dtype=torch.float32)
    sigma = sigma.to(x.device)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """MSE over all elements of the samples where mask is True (equal to mse(pred[mask], target[mask]), without the
    host sync of boolean indexing; NaN if no sample is real, as the reference)."""
    mse = F.mse_loss(pred, target, reduction="none").flatten(1).mean(dim=1)
    return torch.where(mask, mse, 0.0).sum() / mask.sum()
