"""Next-frame sampler: Karras schedule, Euler / Heun steps with optional churn (reference spec §5; Karras et al. 2022,
Algorithm 2).

Reference quirk kept (spec §13 item 2): the initial sample is *unit-variance* noise, not sigma_max * N(0, I), although
the first network call is told sigma = sigma_max.

The schedule is a list of Python floats, so every branch (churn, Heun vs. Euler on the last step) is decided on the
host before any kernel runs: the loop has static shapes and no device-to-host syncs (compilable, graph-capturable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diamond_pl.diffusion.edm import Denoiser


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 5.0, rho: float = 7.0) -> Tensor:
    """sigma_i = (sigma_max^(1/rho) + i/(N-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..N-1, then 0.

    Shape (num_steps + 1,). For N = 1 the schedule is [sigma_max, 0] (linspace(0, 1, 1) = [0]). Computed in float32
    as the reference does, so the values match it bit for bit (e.g. sigma_0 = 5.0000014, not 5).
    """
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float32)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat((sigmas, sigmas.new_zeros(1)))


@dataclass
class SamplerConfig:
    num_steps: int = 3
    sigma_min: float = 0.002
    sigma_max: float = 5.0
    rho: float = 7.0
    order: int = 1  # 1: Euler, 2: Heun
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0


@torch.no_grad()
def sample_next_obs(
    denoiser: Denoiser,
    prev_obs: Tensor,
    prev_act: Tensor,
    num_steps: int = 3,
    order: int = 1,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    initial_noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    sigmas: Tensor | list[float] | None = None,
    sigma_min: float = 0.002,
    sigma_max: float = 5.0,
    rho: float = 7.0,
) -> Tensor | tuple[Tensor, Tensor]:
    """Generate the next frame (B, C, H, W) given prev_obs (B, n, C, H, W) in [-1, 1] and prev_act (B, n).

    `sigmas` (with the trailing 0; a list or CPU tensor) overrides the Karras schedule. With `return_trajectory`, also
    returns x before the first step and after every step, stacked: (num_steps + 1, B, C, H, W).
    """
    if sigmas is None:
        sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, rho)
    sigmas = [float(s) for s in sigmas]  # host-side schedule (no device syncs in the loop)
    num_steps = len(sigmas) - 1
    assert order in (1, 2)

    b, _, c, h, w = prev_obs.shape
    if initial_noise is None:
        initial_noise = torch.randn(b, c, h, w, generator=generator, device=prev_obs.device, dtype=prev_obs.dtype)
    x = initial_noise  # unit variance, not sigma_max * N(0, I) (reference quirk)
    trajectory = [x]

    gamma_churn = min(s_churn / num_steps, math.sqrt(2) - 1)
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        # churn: raise the noise level to sigma_hat by adding fresh noise, which lets the sampler correct past errors
        gamma = gamma_churn if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * s_noise
            x = x + eps * math.sqrt(sigma_hat**2 - sigma**2)
        # the reference evaluates D at sigma even after churn (k-diffusion uses sigma_hat); no-op for s_churn = 0
        denoised = denoiser.denoise(x, sigma, prev_obs, prev_act)
        d = (x - denoised) / sigma_hat  # dx/dsigma of the probability-flow ODE
        dt = sigma_next - sigma_hat
        if order == 1 or sigma_next == 0:
            x = x + d * dt  # Euler (the step to sigma = 0 lands on D, already on the 8-bit grid)
        else:
            # Heun: re-evaluate the slope at the Euler estimate and take the average of the two slopes
            x_next = x + d * dt
            d_next = (x_next - denoiser.denoise(x_next, sigma_next, prev_obs, prev_act)) / sigma_next
            x = x + (d + d_next) / 2 * dt
        trajectory.append(x)

    return (x, torch.stack(trajectory)) if return_trajectory else x


class DiffusionSampler:
    """A denoiser plus a fixed sampler configuration: `sampler(prev_obs, prev_act)` -> next frame."""

    def __init__(self, denoiser: Denoiser, cfg: SamplerConfig | None = None) -> None:
        self.denoiser = denoiser
        self.cfg = cfg or SamplerConfig()
        # a host-side list, so that calls neither convert nor sync
        self.sigmas = karras_sigmas(self.cfg.num_steps, self.cfg.sigma_min, self.cfg.sigma_max, self.cfg.rho).tolist()

    def __call__(
        self,
        prev_obs: Tensor,
        prev_act: Tensor,
        initial_noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        return_trajectory: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        cfg = self.cfg
        return sample_next_obs(
            self.denoiser,
            prev_obs,
            prev_act,
            order=cfg.order,
            s_churn=cfg.s_churn,
            s_tmin=cfg.s_tmin,
            s_tmax=cfg.s_tmax,
            s_noise=cfg.s_noise,
            initial_noise=initial_noise,
            generator=generator,
            return_trajectory=return_trajectory,
            sigmas=self.sigmas,
        )
