"""Imagination: the world model as a batched environment (reference spec §8).

Each of the N imagined envs keeps a buffer of the last 4 frames and actions. A step writes the policy's action into
the last action slot, samples the next frame with the diffusion sampler, samples reward sign and end from the
reward/end model (advancing its LSTM), and rolls the buffers. An env is done when its sampled end flag is set or it has
run `horizon` steps (truncation); done envs restart at once from a fresh real context.

Contexts are 4-frame windows of real data (left padding only), drawn from the train store by a `SegmentSampler` and
preloaded on the device (as uint8) in blocks of `num_batches_to_preload` batches; for each, the reward/end LSTM is burnt in on the
3 real transitions of the context. Done envs take the next unused contexts of the block, in env order.

Shapes never depend on data: `step` computes new contexts for all envs and selects with `torch.where`, and the pool
cursor is a device tensor, so a step has no host-device synchronisation and can be compiled / captured as a CUDA
graph. The only sync is in `ensure_contexts`, once per rollout, to decide whether the pool must be refilled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

from diamond_pl.data.batch import Batch
from diamond_pl.diffusion.next_frame import NextObsFn, roll, sample_next_frame
from diamond_pl.frames import uint8_to_float


class RewEndFn(Protocol):
    def __call__(
        self, obs: Tensor, act: Tensor, next_obs: Tensor, hx_cx: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """(N, T, ...) transitions -> logits_rew (N, T, 3), logits_end (N, T, 2), LSTM state ((1, N, H), (1, N, H))."""


@dataclass
class WorldModelEnvConfig:
    num_envs: int = 32  # the actor-critic batch size
    horizon: int = 15  # imagined episodes are truncated after this many steps
    num_batches_to_preload: int = 256  # contexts preloaded per block: num_batches_to_preload * num_envs


@dataclass
class StepOutput:
    obs: Tensor  # float (N, 3, H, W): next observation (first frame of a new context for done envs)
    rew: Tensor  # float (N,) in {-1, 0, 1}
    end: Tensor  # bool (N,)
    trunc: Tensor  # bool (N,)
    final_obs: Tensor  # float (N, 3, H, W): the generated frame; the final observation where done
    burnin_obs: Tensor | None  # float (N, n-1, 3, H, W): first frames of the new context, to burn in the policy


class WorldModelEnv:
    def __init__(
        self,
        next_obs_fn: NextObsFn,
        rew_end_fn: RewEndFn,
        sample_contexts: Callable[[], Batch],
        cfg: WorldModelEnvConfig,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> None:
        """`sample_contexts()` returns a Batch of `cfg.num_envs` real windows of n = 4 steps (left padding only)."""
        self.next_obs_fn = next_obs_fn
        self.rew_end_fn = rew_end_fn
        self.sample_contexts = sample_contexts
        self.cfg = cfg
        self.device = torch.device(device)
        self.generator = generator
        self.pool: dict[str, Tensor] | None = None
        self.cursor = torch.zeros((), dtype=torch.int64, device=self.device)
        self.pool_size = 0

    # --- context pool -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def refill_contexts(self) -> None:
        """Preload a block of contexts and burn the reward/end LSTM in on their 3 real transitions.

        Frames are kept as uint8 (with their padding mask) and converted when taken: at the paper's 256 x 32
        contexts of 4 frames that is 1.6 GB instead of 6.4 GB of float32 (device memory on a GPU)."""
        obs, real, act, h, c = [], [], [], [], []
        for _ in range(self.cfg.num_batches_to_preload):
            batch = self.sample_contexts().to(self.device, non_blocking=True)
            o = batch.obs_float()  # padding frames are 0.0 (gray); mask_padding is otherwise ignored, as in DIAMOND
            _, _, (hb, cb) = self.rew_end_fn(o[:, :-1], batch.act[:, :-1], o[:, 1:], None)
            obs.append(batch.obs)
            real.append(batch.mask_padding)
            act.append(batch.act)
            h.append(hb[0])
            c.append(cb[0])
        self.pool = {"obs": torch.cat(obs), "real": torch.cat(real), "act": torch.cat(act), "h": torch.cat(h),
                     "c": torch.cat(c)}
        self.pool_size = self.pool["obs"].shape[0]
        self.cursor = torch.zeros((), dtype=torch.int64, device=self.device)

    def ensure_contexts(self, num_steps: int) -> None:
        """Refill when fewer than a worst case of `num_steps` steps' worth of contexts remain (one host sync)."""
        needed = self.cfg.num_envs * (num_steps + 1)
        if self.pool is None or self.pool_size - int(self.cursor) < needed:
            self.refill_contexts()

    def _take_contexts(self, mask: Tensor) -> dict[str, Tensor]:
        """The next unused contexts for the envs in `mask` (bool (N,)), in env order; others get arbitrary ones."""
        assert self.pool is not None
        offsets = torch.cumsum(mask.long(), dim=0) - 1  # k-th done env takes context cursor + k
        idx = (self.cursor + offsets.clamp(min=0)).clamp(max=self.pool_size - 1)
        self.cursor = self.cursor + mask.long().sum()
        ctx = {k: v[idx] for k, v in self.pool.items()}
        # the same float frames as Batch.obs_float: [-1, 1], padding exactly 0.0
        ctx["obs"] = uint8_to_float(ctx["obs"]).masked_fill_(~ctx.pop("real")[..., None, None, None], 0.0)
        return ctx

    # --- env interface ------------------------------------------------------------------------------------------
    def reset(self) -> Tensor:
        """Start all envs from fresh contexts. Returns the last context frame (N, 3, H, W)."""
        self.ensure_contexts(0)
        ctx = self._take_contexts(torch.ones(self.cfg.num_envs, dtype=torch.bool, device=self.device))
        self.obs_buffer = ctx["obs"]  # (N, n, 3, H, W)
        self.act_buffer = ctx["act"]  # (N, n); the last slot is overwritten by each step's action
        self.hx_cx = (ctx["h"][None], ctx["c"][None])
        self.length = torch.zeros(self.cfg.num_envs, dtype=torch.int64, device=self.device)
        return self.obs_buffer[:, -1]

    @torch.no_grad()
    def step(self, act: Tensor) -> StepOutput:
        self.act_buffer = torch.cat((self.act_buffer[:, :-1], act[:, None]), dim=1)
        next_obs, next_context, _ = sample_next_frame(self.next_obs_fn, self.obs_buffer, self.act_buffer)

        logits_rew, logits_end, self.hx_cx = self.rew_end_fn(
            self.obs_buffer[:, -1:], act[:, None], next_obs[:, None], self.hx_cx
        )
        # reward and end are *sampled* (not argmax): reward = class - 1 in {-1, 0, 1}
        rew = self._sample(logits_rew[:, 0]).float() - 1
        end = self._sample(logits_end[:, 0]).bool()
        self.length = self.length + 1
        trunc = self.length >= self.cfg.horizon

        self.obs_buffer = next_context
        self.act_buffer = roll(self.act_buffer, torch.zeros_like(act))  # the next step writes its action there

        done = end | trunc
        ctx = self._take_contexts(done)
        d5, d2, d1 = done[:, None, None, None, None], done[:, None], done[None, :, None]
        self.obs_buffer = torch.where(d5, ctx["obs"], self.obs_buffer)
        self.act_buffer = torch.where(d2, ctx["act"], self.act_buffer)
        h, c = self.hx_cx
        self.hx_cx = (torch.where(d1, ctx["h"][None], h), torch.where(d1, ctx["c"][None], c))
        self.length = torch.where(done, 0, self.length)
        return StepOutput(
            obs=self.obs_buffer[:, -1],
            rew=rew,
            end=end,
            trunc=trunc,
            final_obs=next_obs,
            burnin_obs=ctx["obs"][:, :-1],
        )

    def _sample(self, logits: Tensor) -> Tensor:
        return torch.multinomial(torch.softmax(logits.float(), dim=-1), 1, generator=self.generator).squeeze(1)
