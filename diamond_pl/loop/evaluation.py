"""World-model test metrics on the test store, and an imagined rollout next to reality (reference spec §10, §12).

Run at each evaluation, without gradient, over the test episodes cut in consecutive windows (spec §2.6):
  denoiser/test/loss_denoising             same random-sigma 2-iteration loss as training
  rew_end_model/test/loss_*                cross-entropies, plus per-class precision / recall / F1
  denoiser/test/world_model/{model,copy}_{psnr,ssim}_{1step,Kstep}   generated frames vs the real ones, and the
                                           "repeat the last frame" baseline (spec-free addition)
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diamond_pl.data.frames import float_to_uint8


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
    context, frames = obs[None, :n], []
    for t in range(obs.shape[0] - n):
        frame = agent.denoiser.sample_next_obs(context, act[None, t : t + n])
        frames.append(frame[0])
        context = torch.cat((context[:, 1:], frame[:, None]), dim=1)
    return obs[n:], torch.stack(frames)


def side_by_side_gif(left: Tensor, right: Tensor, scale: int = 2, duration_ms: int = 100) -> bytes:
    """Animated GIF of two float [-1, 1] clips (T, 3, H, W) placed side by side."""
    frames = torch.cat((left, torch.full_like(left[..., :2], -1.0), right), dim=-1)  # a thin dark separator
    images = float_to_uint8(frames.cpu()).permute(0, 2, 3, 1).numpy()
    pil = [Image.fromarray(np.ascontiguousarray(im)).resize((im.shape[1] * scale, im.shape[0] * scale), Image.NEAREST) for im in images]
    buf = io.BytesIO()
    pil[0].save(buf, format="GIF", save_all=True, append_images=pil[1:], duration=duration_ms, loop=0)
    return buf.getvalue()


def log_gif(logger, tag: str, gif: bytes, step: int) -> None:
    """Write an animated GIF to TensorBoard as an image summary (works without moviepy)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    writer = getattr(logger, "experiment", None)
    if writer is None or not hasattr(writer, "_get_file_writer"):
        return  # not a TensorBoard SummaryWriter (e.g. a dummy on ranks > 0)
    im = Image.open(io.BytesIO(gif))
    image = Summary.Image(height=im.height, width=im.width, colorspace=3, encoded_image_string=gif)
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
    writer.flush()
