"""The denoiser's inner model F (reference spec §3.6).

F(c_in * y, c_noise, prev_obs / sigma_data, prev_act) sees
  * the noisy next frame, already scaled by c_in,
  * n previous frames, already scaled by 1 / sigma_data, stacked on channels frame-major, oldest first, then the noisy
    frame last (3n + 3 input channels),
  * one conditioning vector cond = MLP(fourier(c_noise) + embed(prev_act)) that drives every adaptive group norm.
The EDM preconditioning itself (c_in, c_skip, c_out, c_noise) lives in `diffusion/edm.py`.

Submodule names give the reference's state-dict keys (below `denoiser.inner_model.`): `noise_emb.weight` (a buffer),
`act_emb.0`, `cond_proj.0/2`, `conv_in`, `unet.*`, `norm_out.norm`, `conv_out`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diamond_pl.nets.blocks import GroupNorm, check_levels
from diamond_pl.nets.unet import UNet


@dataclass
class DenoiserNetConfig:
    num_actions: int | None = None  # follows the game when built by DiamondAgent
    img_channels: int = 3
    num_steps_conditioning: int = 4
    cond_channels: int = 256
    depths: tuple[int, ...] = (2, 2, 2, 2)
    channels: tuple[int, ...] = (64, 64, 64, 64)
    attn_depths: tuple[int, ...] = (0, 0, 0, 0)


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar: [cos(2 pi c w), sin(2 pi c w)] with fixed w ~ N(0, 1).

    w is a buffer: never trained, but saved with the model (the frequencies are drawn anew for every run).
    """

    def __init__(self, cond_channels: int) -> None:
        super().__init__()
        assert cond_channels % 2 == 0
        self.register_buffer("weight", torch.randn(1, cond_channels // 2))

    def forward(self, c_noise: Tensor) -> Tensor:
        # an outer product written as a broadcast multiply, not a matmul: autocast would run a matmul in half
        # precision, and the phases (several radians) need fp32
        f = 2 * math.pi * c_noise[:, None] * self.weight  # (B, cond/2)
        return torch.cat((f.cos(), f.sin()), dim=-1)


class DenoiserNet(nn.Module):
    def __init__(self, cfg: DenoiserNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n, cond = cfg.num_steps_conditioning, cfg.cond_channels
        check_levels("denoiser", cfg, ("channels", "depths", "attn_depths"))  # no frame size: the U-Net pads
        if n < 1:
            raise ValueError(f"model.denoiser.num_steps_conditioning = {n}: the denoiser needs at least 1 past frame")
        if cond % 2 or cond % n:  # half the noise embedding is cos, half sin; each past action gets cond / n dims
            raise ValueError(f"model.denoiser.cond_channels = {cond} must be even and a multiple of "
                             f"num_steps_conditioning ({n})")

        self.noise_emb = FourierFeatures(cond)
        # the n action embeddings, concatenated in time order, have the size of the noise embedding
        self.act_emb = nn.Sequential(nn.Embedding(cfg.num_actions, cond // n), nn.Flatten())
        self.cond_proj = nn.Sequential(nn.Linear(cond, cond), nn.SiLU(), nn.Linear(cond, cond))

        self.conv_in = nn.Conv2d((n + 1) * cfg.img_channels, cfg.channels[0], kernel_size=3, padding=1)
        self.unet = UNet(cond, list(cfg.depths), list(cfg.channels), list(cfg.attn_depths))
        self.norm_out = GroupNorm(cfg.channels[0])
        self.conv_out = nn.Conv2d(cfg.channels[0], cfg.img_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # F starts at a constant (its bias), so D starts near c_skip * y

    def forward(self, noisy_next_obs: Tensor, c_noise: Tensor, prev_obs: Tensor, prev_act: Tensor) -> Tensor:
        """noisy_next_obs (B, C, H, W) scaled by c_in; c_noise (B,); prev_obs (B, n, C, H, W) scaled by 1/sigma_data;
        prev_act (B, n) int64. Returns F (B, C, H, W)."""
        cond = self.cond_proj(self.noise_emb(c_noise) + self.act_emb(prev_act))
        x = torch.cat((prev_obs.flatten(1, 2), noisy_next_obs), dim=1)  # frame-major, oldest first, noisy last
        x = self.conv_in(x)
        x = self.unet(x, cond)
        return self.conv_out(F.silu(self.norm_out(x)))
