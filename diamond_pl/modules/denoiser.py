"""DenoiserModule: the diffusion world model of the next frame (reference spec §3, §5).

Training: EDM denoising loss with offset noise over windows of n + 2 = 6 frames (two loss iterations, the second
conditioned on the model's own quantised one-step reconstruction). Sampling: Karras schedule, 3 Euler steps.

World-model quality (`world_model_metrics`): on real windows of n + K frames, generate K frames autoregressively from
the n real context frames and the real actions, and compare the 1st and K-th generated frames with the real ones
(PSNR, SSIM), next to the "repeat the last context frame" baseline. Most Atari pixels do not change between frames,
so copying is a strong baseline that a useful world model must beat.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from diamond_pl.data.batch import Batch
from diamond_pl.diffusion.edm import (
    Denoiser, DiffusionConfig, add_training_noise, masked_mse, per_sample, sample_training_sigma,
)
from diamond_pl.diffusion.next_frame import imagine_open_loop
from diamond_pl.diffusion.sampler import DiffusionSampler, SamplerConfig
from diamond_pl.modules.component import Component
from diamond_pl.modules.optim import OptimConfig
from diamond_pl.nets.denoiser_net import DenoiserNet, DenoiserNetConfig

DATA_RANGE = 2.0  # frames live in [-1, 1]


def denoiser_loss(
    denoiser: Denoiser, obs: Tensor, act: Tensor, mask_padding: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """DIAMOND's denoiser loss over a batch of segments (spec §3.4-3.5): EDM's per-frame loss, unrolled.

    obs (B, T, C, H, W) float in [-1, 1] with padding frames already 0; act (B, T) int64; mask_padding (B, T) bool.
    For i in 0 .. T-n-1: condition on frames i..i+n-1 and actions i..i+n-1 of a working copy, denoise frame i+n
    from a fresh training sigma, MSE in F-space over real targets; then put the quantised one-step D in place of
    frame i+n, so later iterations condition on the model's own reconstruction. Loss = mean over iterations.
    """
    n = denoiser.num_steps_conditioning
    b, t = obs.shape[:2]
    assert t > n, f"need more than {n} frames, got {t}"
    frames = list(obs.unbind(dim=1))  # the working copy: frames are replaced, never written in place
    losses = []
    for i in range(t - n):
        x = frames[i + n]
        sigma = sample_training_sigma(b, denoiser.train_sigma_loc, denoiser.train_sigma_scale, denoiser.train_sigma_min,
                                      denoiser.train_sigma_max, generator, obs.device)
        y = add_training_noise(x, sigma, denoiser.sigma_offset_noise, generator)
        out, cs = denoiser.model_output(y, sigma, torch.stack(frames[i : i + n], dim=1), act[:, i : i + n])
        # the regression target of F that makes D(y) = x; MSE on F is EDM's loss weighting 1 / c_out^2
        target = (x - per_sample(cs.c_skip, y) * y) / per_sample(cs.c_out, y)
        losses.append(masked_mse(out, target, mask_padding[:, i + n]))
        frames[i + n] = denoiser.denoised(y, out.detach(), cs)
    loss = torch.stack(losses).mean()
    return loss, {"loss_denoising": loss.detach()}


def denoiser_optim() -> OptimConfig:
    return OptimConfig(lr=1e-4, eps=1e-8, weight_decay=0.01, warmup_steps=100, max_grad_norm=1.0)


class DenoiserModule(Component):
    name = "denoiser"

    def __init__(
        self,
        net: DenoiserNetConfig,
        sampler: SamplerConfig | None = None,
        optim: OptimConfig | None = None,
        diffusion: DiffusionConfig | None = None,
        wm_metric_horizon: int = 15,
    ) -> None:
        super().__init__()
        self.net_cfg = net
        self.sampler_cfg = sampler or SamplerConfig()
        self.optim_cfg = optim or denoiser_optim()
        self.diffusion_cfg = diffusion or DiffusionConfig()
        self.denoiser = Denoiser.from_config(DenoiserNet(net), self.diffusion_cfg)
        self.sampler = DiffusionSampler(self.denoiser, self.sampler_cfg)
        self.wm_metric_horizon = wm_metric_horizon
        self.wm_metrics = torch.nn.ModuleDict(
            {
                f"{who}_{metric}_{step}": cls(data_range=DATA_RANGE)
                for who in ("model", "copy")
                for step in ("1step", f"{wm_metric_horizon}step")
                for metric, cls in (("psnr", PeakSignalNoiseRatio), ("ssim", StructuralSimilarityIndexMeasure))
            }
        )

    @property
    def num_steps_conditioning(self) -> int:
        return self.net_cfg.num_steps_conditioning

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        return denoiser_loss(self.denoiser, batch.obs_float(), batch.act, batch.mask_padding)

    @torch.no_grad()
    def sample_next_obs(self, prev_obs: Tensor, prev_act: Tensor, **kwargs) -> Tensor:
        """Next frame (B, 3, H, W) in [-1, 1] from prev_obs (B, n, 3, H, W) and prev_act (B, n)."""
        return self.sampler(prev_obs, prev_act, **kwargs)

    # --- world-model quality ------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_world_model_metrics(self, batch: Batch) -> None:
        """Accumulate 1-step and K-step PSNR/SSIM of generated vs real frames, and of the copy baseline.

        Uses only windows whose n + K frames are all real (batch of seq_len >= n + K)."""
        n, k = self.num_steps_conditioning, self.wm_metric_horizon
        if batch.seq_len < n + k:
            raise ValueError(f"world-model metrics need windows of {n + k} frames, got {batch.seq_len}")
        full = batch.mask_padding[:, : n + k].all(dim=1)
        if not bool(full.any()):
            return
        obs = batch.obs_float()[full][:, : n + k]
        act = batch.act[full][:, : n + k - 1]
        imagined = imagine_open_loop(self.sample_next_obs, obs[:, :n], act)
        copy = obs[:, n - 1]
        for step, name in {0: "1step", k - 1: f"{k}step"}.items():  # one entry when k = 1
            real = obs[:, n + step]
            for who, frame in (("model", imagined[:, step]), ("copy", copy)):
                self.wm_metrics[f"{who}_psnr_{name}"].update(frame, real)
                self.wm_metrics[f"{who}_ssim_{name}"].update(frame, real)

    def compute_world_model_metrics(self) -> dict[str, Tensor]:
        """The accumulated metrics (empty if nothing was accumulated); then reset."""
        out = {}
        for name, metric in self.wm_metrics.items():
            if metric.update_count > 0:
                out[f"world_model/{name}"] = metric.compute()
            metric.reset()
        return out

    def trainable(self) -> torch.nn.Module:
        return self.denoiser
