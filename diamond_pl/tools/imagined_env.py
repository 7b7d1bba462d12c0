"""One imagined game for the interactive tools (dream, play): the world model stepped one action at a time.

It does what `envs.world_model_env.WorldModelEnv.step` does for one env (same order: write the action into the last
slot, sample the next frame with `diffusion.next_frame.sample_next_frame`, sample reward sign and end from the
reward/end model advancing its LSTM, roll the buffers), but it never resets by itself: the caller decides what an imagined end means (dream keeps going and marks
it; play shows it and resets). It can also return the sampler's denoising trajectory of a step.

A context is the last n = 4 real frames with the n - 1 actions taken between them (padding frames 0.0, as in
training); the reward/end LSTM is burnt in on those n - 1 real transitions, as `WorldModelEnv` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diamond_pl.diffusion.next_frame import roll, sample_next_frame


@dataclass
class ImaginedStep:
    obs: Tensor  # float (3, H, W) in [-1, 1]: the generated frame
    rew: float  # sampled reward sign in {-1, 0, 1}
    end: bool  # sampled episode end
    rew_probs: Tensor  # (3,): P(r = -1), P(r = 0), P(r = +1)
    end_prob: float  # P(end)
    trajectory: Tensor | None  # float (num_sampler_steps + 1, 3, H, W): noise, then x after each step


class ImaginedEnv:
    def __init__(self, agent, generator: torch.Generator | None = None) -> None:
        self.denoiser = agent.denoiser
        self.rew_end = agent.rew_end_model.net
        self.n = agent.denoiser.num_steps_conditioning
        self.device = agent.device
        self.generator = generator
        self.obs_buffer: Tensor | None = None

    @torch.no_grad()
    def reset(self, obs: Tensor, act: Tensor) -> Tensor:
        """Start from a real context: obs float (n, 3, H, W), act int64 (n,) (the last action is not used).

        Returns the last context frame (3, H, W)."""
        if obs.shape[0] != self.n or act.shape[0] != self.n:
            raise ValueError(f"a context has {self.n} frames and actions, got {tuple(obs.shape)} / {tuple(act.shape)}")
        self.obs_buffer = obs[None].to(self.device, torch.float32)
        self.act_buffer = act[None].to(self.device, torch.int64).clone()
        o = self.obs_buffer
        _, _, self.hx_cx = self.rew_end(o[:, :-1], self.act_buffer[:, :-1], o[:, 1:], None)
        return self.obs_buffer[0, -1]

    @torch.no_grad()
    def step(self, action: int, return_trajectory: bool = False) -> ImaginedStep:
        if self.obs_buffer is None:
            raise RuntimeError("reset the imagined env with a real context first")
        self.act_buffer[:, -1] = int(action)
        next_obs, next_context, trajectory = sample_next_frame(
            self.denoiser.sample_next_obs, self.obs_buffer, self.act_buffer, generator=self.generator,
            return_trajectory=return_trajectory)
        act = self.act_buffer[:, -1:]
        logits_rew, logits_end, self.hx_cx = self.rew_end(self.obs_buffer[:, -1:], act, next_obs[:, None], self.hx_cx)
        p_rew = torch.softmax(logits_rew[0, 0].float(), dim=-1)
        p_end = torch.softmax(logits_end[0, 0].float(), dim=-1)
        # sampled, not argmax, as in imagination during training
        rew = int(torch.multinomial(p_rew, 1, generator=self.generator)) - 1
        end = bool(torch.multinomial(p_end, 1, generator=self.generator))
        self.obs_buffer = next_context
        self.act_buffer = roll(self.act_buffer, torch.zeros_like(act[:, 0]))
        return ImaginedStep(obs=next_obs[0], rew=float(rew), end=end, rew_probs=p_rew.cpu(), end_prob=float(p_end[1]),
                            trajectory=None if trajectory is None else trajectory[:, 0])
