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
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diamond_pl.nets.blocks import Downsample, ResBlocks, init_lstm

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


class RewEndLossOutput(NamedTuple):
    loss: Tensor  # scalar, to backpropagate
    metrics: dict[str, Tensor]  # detached scalars: loss_rew, loss_end, loss_total
    # for the confusion matrices (rows = true class, columns = predicted); only entries where `mask` is True are real
    pred_rew: Tensor  # int64 (B, T-1), argmax class
    target_rew: Tensor  # int64 (B, T-1), sign(r) + 1
    pred_end: Tensor  # int64 (B, T-1)
    target_end: Tensor  # int64 (B, T-1)
    mask: Tensor  # bool (B, T-1), real (non-padding) transitions


class RewEndNet(nn.Module):
    def __init__(self, cfg: RewEndNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
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

    def compute_loss(
        self,
        obs: Tensor,
        act: Tensor,
        rew: Tensor,
        end: Tensor,
        mask_padding: Tensor,
        final_obs: Tensor,
        has_final_obs: Tensor,
    ) -> RewEndLossOutput:
        """Training loss on a batch of windows (spec §6.2).

        obs float [-1, 1] (B, T, C, H, W) with padding frames already 0, act int64 (B, T), rew raw float (B, T),
        end bool (B, T), mask_padding bool (B, T), final_obs float [-1, 1] (B, C, H, W), has_final_obs bool (B,).
        T frames give T - 1 transitions (T = 19 in DIAMOND -> 18), the LSTM starting from zero at the window start.
        """
        obs_t, act_t, next_obs = obs[:, :-1], act[:, :-1], obs[:, 1:]
        rew_t, end_t, mask = rew[:, :-1], end[:, :-1].bool(), mask_padding[:, :-1].bool()

        # A terminal transition's next frame lies beyond the episode, so in the window it is padding: put the stored
        # real post-terminal frame there (only the first end of a window; truncations are left as padding, end = 0).
        has_end = end_t.any(dim=1) & has_final_obs.bool()
        first_end = end_t.int().argmax(dim=1)  # argmax returns the first maximal index
        positions = torch.arange(end_t.size(1), device=end_t.device)
        patch = (positions[None] == first_end[:, None]) & has_end[:, None]  # (B, T-1), at most one True per row
        next_obs = torch.where(patch[:, :, None, None, None], final_obs[:, None].to(next_obs.dtype), next_obs)

        logits_rew, logits_end, _ = self(obs_t, act_t, next_obs)
        target_rew = (torch.sign(rew_t) + 1).long()
        target_end = end_t.long()

        # each cross-entropy is averaged over the real transitions only (a masked mean, no host sync)
        maskf = mask.float()
        num_real = maskf.sum().clamp(min=1)
        ce_rew = F.cross_entropy(logits_rew.flatten(0, 1), target_rew.flatten(), reduction="none")
        ce_end = F.cross_entropy(logits_end.flatten(0, 1), target_end.flatten(), reduction="none")
        loss_rew = (ce_rew * maskf.flatten()).sum() / num_real
        loss_end = (ce_end * maskf.flatten()).sum() / num_real
        loss = loss_rew + loss_end

        metrics = {"loss_rew": loss_rew.detach(), "loss_end": loss_end.detach(), "loss_total": loss.detach()}
        return RewEndLossOutput(
            loss,
            metrics,
            pred_rew=logits_rew.detach().argmax(dim=-1),
            target_rew=target_rew,
            pred_end=logits_end.detach().argmax(dim=-1),
            target_end=target_end,
            mask=mask,
        )

