"""Lambda returns and the actor-critic loss (reference spec §7.3, §7.4).

Everything is (B, T) over one imagined chunk of T = 15 steps. `value_bootstrap[:, t]` is V' of the state *after*
step t (computed without gradient): the value of the next observation, or of the episode's final observation when the
step ended (end) or was cut off (trunc). Rewards are sign-clipped here; the dataset keeps them raw.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def lambda_returns(
    rew: Tensor, end: Tensor, trunc: Tensor, value_bootstrap: Tensor, gamma: float = 0.985, lambda_: float = 0.95
) -> Tensor:
    """G_t = r~_t + gamma (1 - d_t) [(1 - u_t)(1 - lambda) + u_t] V'_t + gamma lambda (1 - max(d_t, u_t)) G_{t+1},
    with r~ = sign(r), d = end, u = trunc and G_T := V'_{T-1}.

    So a terminal step gives G = r~; a truncated step G = r~ + gamma V'(final obs) (the episode goes on in principle
    but the next step of the chunk belongs to a new one); the last step of a chunk that is not done G = r~ + gamma V'.
    """
    r = torch.sign(rew.float())
    d, u = end.float(), trunc.float()
    v = value_bootstrap.float()
    bootstrap = gamma * (1 - d) * ((1 - u) * (1 - lambda_) + u) * v  # the one-step part of every target
    keep = gamma * lambda_ * (1 - torch.maximum(d, u))  # how much of G_{t+1} flows back into G_t

    returns = torch.empty_like(v)
    g = v[:, -1]
    for t in reversed(range(v.size(1))):
        g = r[:, t] + bootstrap[:, t] + keep[:, t] * g
        returns[:, t] = g
    return returns


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
