"""Actor-critic network (reference spec §7.1): one frame -> conv encoder -> LSTMCell -> policy logits and value.

No frame stacking: memory comes from the LSTM state (hx, cx), which the caller carries between steps and zeroes at
episode boundaries. The value is a plain scalar (no two-hot, no return normalisation).

Action temperature: the policy samples from softmax(logits / temperature) (`sample_actions`). 1.0 (the default) is
DIAMOND; a lower temperature makes the policy greedier, which some games need to leave the zero-return plateau
(DIAMOND issue #34: Freeway, following IRIS). It only changes how actions are drawn, never the network or its loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diamond_pl.nets.blocks import SmallResBlock, check_levels, init_lstm


@dataclass
class ActorCriticNetConfig:
    num_actions: int | None = None  # follows the game when built by DiamondAgent
    img_channels: int = 3
    lstm_dim: int = 512
    channels: tuple[int, ...] = (32, 32, 64, 64)
    down: tuple[int, ...] = (1, 1, 1, 1)  # 1: a 2x2 max-pool after that stage's block
    img_size: int = 64


class ActorCriticEncoder(nn.Module):
    """conv3x3, then per stage SmallResBlock (+ MaxPool2d(2) where down): 64x64 -> 4x4 with the defaults."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], down: tuple[int, ...]) -> None:
        super().__init__()
        assert len(channels) == len(down)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)]
        for i, (c, d) in enumerate(zip(channels, down)):
            layers.append(SmallResBlock(channels[max(0, i - 1)], c))
            if d:
                layers.append(nn.MaxPool2d(2))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class ActorCriticNet(nn.Module):
    def __init__(self, cfg: ActorCriticNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        check_levels("actor_critic", cfg, ("channels", "down"))  # the pooling is checked below
        pools = 2 ** sum(1 for d in cfg.down if d)
        if cfg.img_size % pools:  # a 2x2 max-pool floors odd sides: 24 -> 12 -> 6 -> 3 -> 1 drops rows and columns
            raise ValueError(
                f"actor_critic: frames of {cfg.img_size} px cannot be max-pooled {pools.bit_length() - 1} times "
                f"without dropping pixels (the bottom and right edges would never reach the policy); use a "
                f"data.img_size that is a multiple of {pools}, or fewer 1s in model.actor_critic.down"
            )
        self.encoder = ActorCriticEncoder(cfg.img_channels, cfg.channels, cfg.down)
        side = cfg.img_size // pools
        self.lstm = nn.LSTMCell(cfg.channels[-1] * side * side, cfg.lstm_dim)
        self.critic_linear = nn.Linear(cfg.lstm_dim, 1)
        self.actor_linear = nn.Linear(cfg.lstm_dim, cfg.num_actions)
        init_lstm(self.lstm)
        # zero heads: the initial policy is uniform and the initial value 0
        for head in (self.critic_linear, self.actor_linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(
        self, obs: Tensor, hx_cx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """obs float [-1, 1] (B, C, H, W); hx_cx (hx, cx) each (B, lstm_dim) or None (zeros).
        Returns logits (B, A), value (B,) and the new (hx, cx)."""
        x = self.encoder(obs).flatten(start_dim=1)
        hx, cx = self.lstm(x, hx_cx)
        return self.actor_linear(hx), self.critic_linear(hx).squeeze(dim=1), (hx, cx)


def sample_actions(logits: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Draw one action per row from softmax(logits / temperature). logits (..., A) -> int64 (...)."""
    probs = torch.softmax(logits.detach() / temperature, dim=-1)
    return torch.multinomial(probs.reshape(-1, probs.size(-1)), 1, generator=generator).reshape(probs.shape[:-1])
