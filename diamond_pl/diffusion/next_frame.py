"""Sampling the next frame from a context: the one autoregressive step of the world model.

Every user of the world model goes through here: training's imagination (`envs.world_model_env.WorldModelEnv`), the
dream and play tools (`tools.imagined_env.ImaginedEnv`), the world-model test metrics and the evaluation GIF
(`imagine_open_loop`).

A context is the last n frames, float (N, n, 3, H, W) in [-1, 1], and the action taken at each of them, int64 (N, n);
the last action is the one being taken now. The sampled frame becomes the newest frame of the context and the oldest
frame drops out.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import Tensor


class NextObsFn(Protocol):
    def __call__(self, prev_obs: Tensor, prev_act: Tensor, **sampler_kwargs) -> Tensor | tuple[Tensor, Tensor]:
        """prev_obs float (N, n, 3, H, W), prev_act int64 (N, n) -> next frame float (N, 3, H, W) in [-1, 1]
        (with `return_trajectory=True`: and the sampler's trajectory)."""


class NextFrame(NamedTuple):
    obs: Tensor  # float (N, 3, H, W): the sampled frame
    context: Tensor  # float (N, n, 3, H, W): the context's frames, rolled to end with the sampled frame
    trajectory: Tensor | None  # float (num_sampler_steps + 1, N, 3, H, W) with return_trajectory, else None


def roll(window: Tensor, new: Tensor) -> Tensor:
    """A (N, n, ...) window without its oldest entry and with `new` (N, ...) appended."""
    return torch.cat((window[:, 1:], new[:, None]), dim=1)


def sample_next_frame(next_obs_fn: NextObsFn, obs: Tensor, act: Tensor, *, return_trajectory: bool = False,
                      **sampler_kwargs) -> NextFrame:
    """The frame that follows the context (obs, act), and the context's frames rolled to end with it.

    `next_obs_fn` is the denoiser's sampler (`DenoiserModule.sample_next_obs`) or a wrapper of it (autocast, CUDA
    graphs); `sampler_kwargs` (e.g. `generator`) go to it."""
    if return_trajectory:
        frame, trajectory = next_obs_fn(obs, act, return_trajectory=True, **sampler_kwargs)
    else:
        frame, trajectory = next_obs_fn(obs, act, **sampler_kwargs), None
    return NextFrame(frame, roll(obs, frame), trajectory)


@torch.no_grad()
def imagine_open_loop(next_obs_fn: NextObsFn, obs: Tensor, act: Tensor) -> Tensor:
    """K frames, float (N, K, 3, H, W), generated one after the other from n real frames obs (N, n, 3, H, W) and the
    real actions act (N, n + K - 1): the k-th frame is sampled with the actions act[:, k : k + n]."""
    n = obs.shape[1]
    frames = []
    for k in range(act.shape[1] - n + 1):
        frame, obs, _ = sample_next_frame(next_obs_fn, obs, act[:, k : k + n])
        frames.append(frame)
    return torch.stack(frames, dim=1)
