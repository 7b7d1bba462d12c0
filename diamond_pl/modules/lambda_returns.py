"""Lambda returns (reference spec §7.3): the targets of the actor-critic loss (`modules/actor_critic.py`).

Everything is (B, T) over one imagined chunk of T = 15 steps. `value_bootstrap[:, t]` is V' of the state *after*
step t (computed without gradient): the value of the next observation, or of the episode's final observation when the
step ended (end) or was cut off (trunc). Rewards are sign-clipped here; the dataset keeps them raw.
"""

from __future__ import annotations

import torch
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
