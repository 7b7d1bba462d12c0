"""World-model test metrics on the test store, and an imagined rollout next to reality (reference spec §10, §12).

Run at each evaluation, without gradient, over the test episodes cut in consecutive windows (spec §2.6):
  denoiser/test/loss_denoising             same random-sigma 2-iteration loss as training
  rew_end_model/test/loss_*                cross-entropies, plus per-class precision / recall / F1
  denoiser/test/world_model/{model,copy}_{psnr,ssim}_{1step,Kstep}   generated frames vs the real ones, and the
                                           "repeat the last frame" baseline (spec-free addition)
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

from diamond_pl.diffusion.next_frame import imagine_open_loop
from diamond_pl.video import compose


@torch.no_grad()
def world_model_test_metrics(agent, dm) -> dict[str, Tensor]:
    device = agent.device
    metrics: dict[str, Tensor] = {}

    losses = [agent.denoiser.loss(b.to(device))[0] for b in dm.test_traversal(dm.denoiser_seq_len)]
    losses = [x for x in losses if torch.isfinite(x)]
    if losses:
        metrics["denoiser/test/loss_denoising"] = torch.stack(losses).mean()

    per_batch = [agent.rew_end_model.loss(b.to(device), "test")[1] for b in dm.test_traversal(dm.rew_end_seq_len)]
    for key in per_batch[0] if per_batch else []:
        metrics[f"rew_end_model/test/{key}"] = torch.stack([m[key] for m in per_batch]).mean()
    if per_batch:
        cls = agent.rew_end_model.classification_metrics("test")
        metrics.update({f"rew_end_model/test/{k}": v for k, v in cls.items()})

    n, k = agent.denoiser.num_steps_conditioning, agent.denoiser.wm_metric_horizon
    for batch in dm.test_traversal(n + k):
        agent.denoiser.update_world_model_metrics(batch.to(device))
    metrics.update({f"denoiser/test/{name}": v for name, v in agent.denoiser.compute_world_model_metrics().items()})
    return metrics


@torch.no_grad()
def imagined_vs_real(agent, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
    """Open-loop dream: from the first n real frames, generate the rest with the real actions.

    obs float (T, 3, H, W), act (T,) of one real window. Returns (real, imagined), each float (T - n, 3, H, W)."""
    n = agent.denoiser.num_steps_conditioning
    imagined = imagine_open_loop(agent.denoiser.sample_next_obs, obs[None, :n], act[None, :-1])
    return obs[n:], imagined[0]


def side_by_side(left: Tensor, right: Tensor, scale: int = 2) -> list[Image.Image]:
    """Two float [-1, 1] clips (T, 3, H, W) as one clip of images, left and right."""
    return [compose([a, b], scale=scale) for a, b in zip(left, right)]
