"""The denoiser's U-Net (reference spec §4), conditioned on one vector through adaptive group norm.

Level i works at resolution 64 / 2**i with c2 = channels[i] and c1 = channels[max(0, i - 1)]:
  down   x_down = Downsample(x) (identity at level 0), then depths[i] ResBlocks (c1 -> c2, then c2 -> c2);
         the skip list of the level is (x_down, out_1, ..., out_depth)
  middle 2 ResBlocks at the deepest level, always with attention
  up     Upsample (identity at the deepest level), then depths[i] + 1 ResBlocks, block k first concatenating the
         level's skips in reverse order (last block output first, x_down last): 2*c2 -> c2, ..., (c1 + c2) -> c1
`u_blocks[0]` / `upsamples[0]` belong to the deepest level (state-dict order of the reference).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from diamond_pl.nets.blocks import Downsample, ResBlocks, Upsample


class UNet(nn.Module):
    def __init__(self, cond_channels: int, depths: list[int], channels: list[int], attn_depths: list[int]) -> None:
        super().__init__()
        assert len(depths) == len(channels) == len(attn_depths)
        self.num_levels = len(channels)

        d_blocks, u_blocks, downsamples, upsamples = [], [], [], []
        for i, (depth, attn) in enumerate(zip(depths, attn_depths)):
            c1, c2 = channels[max(0, i - 1)], channels[i]
            downsamples.append(nn.Identity() if i == 0 else Downsample(c1))
            d_blocks.append(ResBlocks([c1] + [c2] * (depth - 1), [c2] * depth, cond_channels, bool(attn)))
            u_blocks.insert(0, ResBlocks([2 * c2] * depth + [c1 + c2], [c2] * depth + [c1], cond_channels, bool(attn)))
            upsamples.insert(0, nn.Identity() if i == self.num_levels - 1 else Upsample(c2))
        self.d_blocks = nn.ModuleList(d_blocks)
        self.u_blocks = nn.ModuleList(u_blocks)
        self.downsamples = nn.ModuleList(downsamples)
        self.upsamples = nn.ModuleList(upsamples)
        self.mid_blocks = ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, attn=True)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        # right/bottom zero padding up to a multiple of 2**(levels-1) (a no-op for 64x64 frames)
        h, w = x.shape[-2:]
        m = 2 ** (self.num_levels - 1)
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))

        skips = []
        for down, blocks in zip(self.downsamples, self.d_blocks):
            x_down = down(x)
            x, outputs = blocks(x_down, cond)
            skips.append([x_down, *outputs])

        x, _ = self.mid_blocks(x, cond)

        for up, blocks, level_skips in zip(self.upsamples, self.u_blocks, reversed(skips)):
            x, _ = blocks(up(x), cond, to_cat=level_skips[::-1])

        return x[..., :h, :w]
