"""The one place where frames change representation.

Frames live as uint8 in [0, 255] everywhere they are stored (env output, replay store, episode files). Networks see
float32 in [-1, 1]: x = u / 255 * 2 - 1. The reverse map truncates (DIAMOND's 8-bit quantisation, spec §3.7), which is
only ever applied to *generated* frames; real frames are never round-tripped through float (spec §13 item 1).
"""

from __future__ import annotations

import torch


def uint8_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return frames.float().div(255).mul(2).sub(1)


def float_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 by truncation (floor of non-negative values), after clamping."""
    return frames.clamp(-1, 1).add(1).div(2).mul(255).to(torch.uint8)
