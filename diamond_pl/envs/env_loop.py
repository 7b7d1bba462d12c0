"""The env loop: step an actor-critic policy in a batched env and record what the actor-critic loss needs (spec §7.2).

Used for imagination (15 steps per actor-critic update, with gradient) and, through `policy_step`, for acting in the
real env (1 step at a time, epsilon-random actions). The recurrent state persists across calls and is detached at the
start of each call (truncated BPTT over `num_steps`).

Per step t:
  1. logits, V_t = policy(obs_t); a_t ~ softmax(logits / temperature), all replaced by uniform actions with prob. eps
  2. step the env
  3. for envs done at t: V_final = value of the final observation (no gradient, one more LSTM step from the current
     state); their state is zeroed and, if the env provides `burnin_obs` (imagination: the new context's first 3
     frames), the policy is stepped through them from zero state (with gradient)
  value_bootstrap_t = V_final if done at t, else V_{t+1} (detached); after the last step V_{t+1} is the value of the
  next observation without advancing the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from diamond_pl.envs.world_model_env import StepOutput
from diamond_pl.nets.actor_critic_net import ActorCriticNet, sample_actions

HiddenState = tuple[Tensor, Tensor]


class TorchEnv(Protocol):
    def reset(self) -> Tensor: ...  # float (N, 3, H, W) in [-1, 1]

    def step(self, act: Tensor) -> StepOutput: ...


@dataclass
class Rollout:
    obs: Tensor  # float (N, K, 3, H, W): observations the actions were taken in
    act: Tensor  # int64 (N, K)
    rew: Tensor  # float (N, K)
    end: Tensor  # bool (N, K)
    trunc: Tensor  # bool (N, K)
    logits: Tensor  # (N, K, A), with gradient
    value: Tensor  # (N, K), with gradient
    value_bootstrap: Tensor  # (N, K), no gradient


def maybe_any(mask: Tensor) -> bool:
    """`mask.any()` where it is free (CPU); on an accelerator assume True rather than synchronise."""
    return bool(mask.any()) if mask.device.type == "cpu" else True


def policy_step(
    net: ActorCriticNet,
    obs: Tensor,
    hx_cx: HiddenState | None,
    temperature: float = 1.0,
    epsilon: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, HiddenState]:
    """One policy step: (action, logits, value, new state). Epsilon is one coin for the whole batch (spec §7.5)."""
    logits, value, hx_cx = net(obs, hx_cx)
    act = sample_actions(logits, temperature, generator)
    if epsilon > 0:
        coin = torch.rand((), device=obs.device, generator=generator) < epsilon
        random_act = torch.randint(0, logits.shape[-1], act.shape, device=obs.device, generator=generator)
        act = torch.where(coin, random_act, act)
    return act, logits, value, hx_cx


class EnvLoop:
    def __init__(
        self,
        env: TorchEnv,
        net: ActorCriticNet,
        temperature: float = 1.0,
        epsilon: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.env, self.net = env, net
        self.temperature, self.epsilon, self.generator = temperature, epsilon, generator
        self.obs: Tensor | None = None
        self.hx_cx: HiddenState | None = None

    def reset(self) -> None:
        """Reset the env; the state starts at zero (the very first context is not burnt in, as in DIAMOND)."""
        self.obs = self.env.reset()
        n, dim = self.obs.shape[0], self.net.lstm.hidden_size
        zeros = torch.zeros(n, dim, device=self.obs.device)
        self.hx_cx = (zeros, zeros.clone())

    def rollout(self, num_steps: int) -> Rollout:
        if self.obs is None:
            self.reset()
        hx, cx = (t.detach() for t in self.hx_cx)
        obs_l, act_l, rew_l, end_l, trunc_l, logits_l, value_l, final_l, done_l = ([] for _ in range(9))

        for _ in range(num_steps):
            act, logits, value, (hx, cx) = policy_step(
                self.net, self.obs, (hx, cx), self.temperature, self.epsilon, self.generator
            )
            out = self.env.step(act)
            done = out.end | out.trunc
            with torch.no_grad():
                _, value_final, _ = self.net(out.final_obs, (hx, cx))

            keep = ~done[:, None]
            hx, cx = hx * keep, cx * keep
            if out.burnin_obs is not None and maybe_any(done):
                hb = torch.zeros_like(hx)
                hc = (hb, hb.clone())
                for i in range(out.burnin_obs.shape[1]):
                    _, _, hc = self.net(out.burnin_obs[:, i], hc)
                hx = torch.where(done[:, None], hc[0], hx)
                cx = torch.where(done[:, None], hc[1], cx)

            obs_l.append(self.obs)
            act_l.append(act)
            rew_l.append(out.rew)
            end_l.append(out.end)
            trunc_l.append(out.trunc)
            logits_l.append(logits)
            value_l.append(value)
            final_l.append(value_final)
            done_l.append(done)
            self.obs = out.obs

        with torch.no_grad():
            _, value_next, _ = self.net(self.obs, (hx, cx))
        self.hx_cx = (hx, cx)

        value = torch.stack(value_l, dim=1)
        next_values = torch.cat((value[:, 1:].detach(), value_next[:, None]), dim=1)
        value_bootstrap = torch.where(torch.stack(done_l, dim=1), torch.stack(final_l, dim=1), next_values)
        return Rollout(
            obs=torch.stack(obs_l, dim=1),
            act=torch.stack(act_l, dim=1),
            rew=torch.stack(rew_l, dim=1),
            end=torch.stack(end_l, dim=1),
            trunc=torch.stack(trunc_l, dim=1),
            logits=torch.stack(logits_l, dim=1),
            value=value,
            value_bootstrap=value_bootstrap,
        )


class TorchRealEnv:
    """A real pixel env (`envs/base.py`) behind the `TorchEnv` interface (float frames on `device`), for model-free training (§9.5)."""

    def __init__(self, env, device: torch.device | str = "cpu") -> None:
        self.env, self.device = env, torch.device(device)

    def _frames(self, x) -> Tensor:
        from diamond_pl.frames import uint8_to_float

        return uint8_to_float(torch.from_numpy(x).to(self.device))

    def reset(self) -> Tensor:
        return self._frames(self.env.reset())

    def step(self, act: Tensor) -> StepOutput:
        out = self.env.step(act.cpu().numpy())
        as_tensor = lambda x, dtype: torch.as_tensor(x, dtype=dtype, device=self.device)  # noqa: E731
        return StepOutput(
            obs=self._frames(out.obs),
            rew=as_tensor(out.rew, torch.float32),  # raw: the lambda returns clip the sign
            end=as_tensor(out.end, torch.bool),
            trunc=as_tensor(out.trunc, torch.bool),
            final_obs=self._frames(out.final_obs),
            burnin_obs=None,  # the real env starts episodes with a zero policy state, no burn-in
        )
