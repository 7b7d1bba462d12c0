"""ActorCriticModule: the policy and value, trained only on imagined rollouts (reference spec §7).

One optimiser step = one rollout of `backup_every` = 15 imagined steps for the world-model env's 32 envs, lambda returns
over that chunk, and REINFORCE with the value baseline + value MSE - entropy bonus. The recurrent state and the
imagined envs persist across steps (truncated BPTT), so consecutive updates continue the same imagined episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diamond_pl.envs.env_loop import EnvLoop, policy_step
from diamond_pl.frames import uint8_to_float
from diamond_pl.modules.lambda_returns import lambda_returns
from diamond_pl.modules.component import Component
from diamond_pl.modules.optim import OptimConfig
from diamond_pl.nets.actor_critic_net import ActorCriticNet, ActorCriticNetConfig


@dataclass
class ActorCriticLossConfig:
    gamma: float = 0.985  # discount
    lambda_: float = 0.95  # lambda of the lambda returns
    entropy_weight: float = 0.001
    value_weight: float = 1.0
    backup_every: int = 15  # imagined steps per update (truncated-BPTT chunk)
    temperature: float = 1.0  # actor temperature when sampling actions; < 1 for games like Freeway (DIAMOND #34)


def actor_critic_loss(
    logits: Tensor,
    values: Tensor,
    actions: Tensor,
    returns: Tensor,
    entropy_weight: float = 0.001,
    value_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE with the value as baseline, value regression on the lambda returns, entropy bonus (spec §7.4).

    logits (B, T, A), values (B, T), actions int64 (B, T), returns (B, T). Every term is a plain mean over B x T.
    Returns the total loss and detached metrics (policy_entropy in bits, loss_actions, loss_entropy, loss_values,
    loss_total).
    """
    returns = returns.detach()
    log_probs = F.log_softmax(logits, dim=-1)
    log_prob_act = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)  # nats

    advantage = (returns - values).detach()  # no advantage normalisation
    loss_actions = -(log_prob_act * advantage).mean()
    loss_entropy = -entropy_weight * entropy.mean()
    loss_values = value_weight * F.mse_loss(values, returns)
    loss = loss_actions + loss_entropy + loss_values

    metrics = {
        "policy_entropy": entropy.detach().mean() / math.log(2),
        "loss_actions": loss_actions.detach(),
        "loss_entropy": loss_entropy.detach(),
        "loss_values": loss_values.detach(),
        "loss_total": loss.detach(),
    }
    return loss, metrics


def actor_critic_optim() -> OptimConfig:
    return OptimConfig(lr=1e-4, eps=1e-8, weight_decay=0.0, warmup_steps=100, max_grad_norm=100.0)


class ActorCriticModule(Component):
    name = "actor_critic"

    def __init__(
        self,
        net: ActorCriticNetConfig,
        loss: ActorCriticLossConfig | None = None,
        optim: OptimConfig | None = None,
    ) -> None:
        super().__init__()
        self.net_cfg = net
        self.loss_cfg = loss or ActorCriticLossConfig()
        self.optim_cfg = optim or actor_critic_optim()
        self.net = ActorCriticNet(net)

    def forward(self, obs: Tensor, hx_cx: tuple[Tensor, Tensor] | None = None):
        return self.net(obs, hx_cx)

    def loss(self, env_loop: EnvLoop) -> tuple[Tensor, dict[str, Tensor]]:
        """Roll the policy out for one chunk (in imagination, or real envs in model-free mode), loss on it."""
        cfg = self.loss_cfg
        rollout = env_loop.rollout(cfg.backup_every)
        returns = lambda_returns(rollout.rew, rollout.end, rollout.trunc, rollout.value_bootstrap, cfg.gamma, cfg.lambda_)
        loss, metrics = actor_critic_loss(
            rollout.logits, rollout.value, rollout.act, returns, cfg.entropy_weight, cfg.value_weight
        )
        metrics["imagined_reward_mean"] = rollout.rew.detach().float().mean()
        metrics["imagined_end_rate"] = rollout.end.detach().float().mean()
        return loss, metrics

    def make_env_loop(self, env, epsilon: float = 0.0, generator: torch.Generator | None = None) -> EnvLoop:
        return EnvLoop(env, self.net, temperature=self.loss_cfg.temperature, epsilon=epsilon, generator=generator)

    def trainable(self) -> torch.nn.Module:
        return self.net


class ActorCriticPolicy:
    """The actor-critic acting outside training, keeping its LSTM state between calls.

    Two uses, one state: in the real env it is the `Policy` of `data.collector` (`act`: a batch of uint8 frames in,
    actions out; `reset(mask)` zeroes the state of envs whose episode ended, in the train env every life loss), and
    the interactive tools step it one float frame at a time (`act_on_frame`, `burn_in`). Actions are drawn by the env
    loop's `policy_step`, the same sampling as in imagination; epsilon is the collector's.
    """

    def __init__(self, net: ActorCriticNet, temperature: float = 1.0) -> None:
        self.net, self.temperature = net, temperature
        self.hx_cx: tuple[Tensor, Tensor] | None = None  # None = zeros (a fresh episode)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def step(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """float frames (N, 3, H, W) in [-1, 1] -> actions (N,), logits (N, A), values (N,); advances the state."""
        x = frames.to(self.device)
        if self.hx_cx is None or self.hx_cx[0].shape[0] != x.shape[0]:
            zeros = torch.zeros(x.shape[0], self.net.lstm.hidden_size, device=self.device)
            self.hx_cx = (zeros, zeros.clone())
        act, logits, value, self.hx_cx = policy_step(self.net, x, self.hx_cx, self.temperature)
        return act, logits, value

    def act(self, obs) -> np.ndarray:
        """uint8 frames (N, 3, H, W) (numpy) -> actions (N,) (numpy): the collector's interface."""
        return self.step(uint8_to_float(torch.from_numpy(obs).to(self.device)))[0].cpu().numpy()

    def act_on_frame(self, frame: Tensor) -> tuple[int, Tensor, float]:
        """One env: float frame (3, H, W) -> (action, action probabilities (A,), value)."""
        act, logits, value = self.step(frame[None])
        probs = torch.softmax(logits[0].float() / self.temperature, dim=-1)
        return int(act[0]), probs.cpu(), float(value[0])

    @torch.no_grad()
    def burn_in(self, frames: Tensor) -> None:
        """One env: step the LSTM through frames (k, 3, H, W) from zero state without acting, as training does
        after an imagined reset."""
        self.reset()
        for frame in frames:
            _, _, self.hx_cx = self.net(frame[None].to(self.device), self.hx_cx)

    def reset(self, mask=None) -> None:
        """Zero the state of the envs in `mask` (bool (N,)), or of all envs."""
        if mask is None:
            self.hx_cx = None
        elif self.hx_cx is not None:
            keep = ~torch.as_tensor(mask, device=self.device)[:, None]
            self.hx_cx = (self.hx_cx[0] * keep, self.hx_cx[1] * keep)

    def state_dict(self) -> dict:
        return {"hx_cx": None if self.hx_cx is None else [t.detach().cpu() for t in self.hx_cx]}

    def load_state_dict(self, state: dict) -> None:
        hc = state.get("hx_cx")
        self.hx_cx = None if hc is None else (hc[0].to(self.device), hc[1].to(self.device))
