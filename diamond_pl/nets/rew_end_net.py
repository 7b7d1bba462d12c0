"""Reward / termination network (reference spec §6) and its training loss.

One transition (obs_t, a_t, obs_{t+1}) is encoded by a small conv net conditioned on the action, the T encodings run
through an LSTM, and a 2-layer head gives 5 logits: 3 reward classes (sign -1, 0, +1 -> classes 0, 1, 2) and 2
termination classes (0 = continue, 1 = end).

Encoder layout (state-dict names of the reference):
  conv_in       3x3 conv, 2 * img_channels -> channels[0] (obs_t and obs_{t+1} stacked on channels)
  stage i       downsamples[i] (identity for i = 0, else a stride-2 conv) then blocks[i] = depths[i] ResBlocks
  middle        blocks[L] = 2 ResBlocks with self-attention at the lowest resolution
Every ResBlock is conditioned (adaptive group norm) on the action embedding directly: no MLP, no noise level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diamond_pl.nets.blocks import Downsample, ResBlocks, check_levels, init_lstm

NUM_REW_CLASSES = 3  # sign(r) + 1
NUM_END_CLASSES = 2  # continue / end


@dataclass
class RewEndNetConfig:
    num_actions: int | None = None  # follows the game when built by DiamondAgent
    img_channels: int = 3
    lstm_dim: int = 512
    cond_channels: int = 128
    depths: tuple[int, ...] = (2, 2, 2, 2)
    channels: tuple[int, ...] = (32, 32, 32, 32)
    attn_depths: tuple[int, ...] = (0, 0, 0, 0)
    img_size: int = 64


class RewEndEncoder(nn.Module):
    def __init__(
        self, in_channels: int, cond_channels: int, depths: tuple[int, ...], channels: tuple[int, ...],
        attn_depths: tuple[int, ...],
    ) -> None:
        super().__init__()
        assert len(depths) == len(channels) == len(attn_depths)
        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)
        blocks, downsamples = [], []
        for i, (depth, attn) in enumerate(zip(depths, attn_depths)):
            c1, c2 = channels[max(0, i - 1)], channels[i]
            downsamples.append(nn.Identity() if i == 0 else Downsample(c1))
            blocks.append(ResBlocks([c1] + [c2] * (depth - 1), [c2] * depth, cond_channels, bool(attn)))
        # the middle stage is the last entry of `blocks`, as in the reference
        blocks.append(ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, attn=True))
        self.blocks = nn.ModuleList(blocks)
        self.downsamples = nn.ModuleList(downsamples)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = self.conv_in(x)
        for down, blocks in zip(self.downsamples, self.blocks[:-1]):
            x, _ = blocks(down(x), cond)
        x, _ = self.blocks[-1](x, cond)
        return x


class RewEndNet(nn.Module):
    def __init__(self, cfg: RewEndNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        check_levels("rew_end_model", cfg, ("channels", "depths", "attn_depths"), cfg.img_size)
        self.encoder = RewEndEncoder(
            2 * cfg.img_channels, cfg.cond_channels, cfg.depths, cfg.channels, cfg.attn_depths
        )
        self.act_emb = nn.Embedding(cfg.num_actions, cfg.cond_channels)
        # the encoder downsamples len(channels) - 1 times: 64x64 -> 8x8 with 4 stages
        side = cfg.img_size // 2 ** (len(cfg.channels) - 1)
        self.lstm = nn.LSTM(cfg.channels[-1] * side * side, cfg.lstm_dim, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(cfg.lstm_dim, cfg.lstm_dim),
            nn.SiLU(),
            nn.Linear(cfg.lstm_dim, NUM_REW_CLASSES + NUM_END_CLASSES, bias=False),
        )
        init_lstm(self.lstm)

    def forward(
        self, obs: Tensor, act: Tensor, next_obs: Tensor, hx_cx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """obs, next_obs float [-1, 1] (B, T, C, H, W), act int64 (B, T); hx_cx (h, c) each (1, B, lstm_dim) or None
        (zeros). Returns logits_rew (B, T, 3), logits_end (B, T, 2) and the final (h, c)."""
        b, t = act.shape
        # all B*T transitions go through the conv encoder in one batch; only the LSTM is sequential
        x = torch.cat((obs, next_obs), dim=2).flatten(0, 1)
        x = self.encoder(x, self.act_emb(act.flatten(0, 1)))
        x, hx_cx = self.lstm(x.reshape(b, t, -1), hx_cx)
        logits = self.head(x)
        return logits[..., :NUM_REW_CLASSES], logits[..., NUM_REW_CLASSES:], hx_cx
