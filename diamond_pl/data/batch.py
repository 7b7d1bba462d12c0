"""A batch of B equal-length windows ("segments") of episodes, as torch tensors.

Frames stay uint8 until the model needs them: `obs_float()` converts on whatever device the batch lives on (4x less
host->device traffic) and only then writes the padding, because padding frames are float 0.0 (mid-gray), which has no
uint8 value. Zero-filled uint8 padding is just a placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch

from diamond_pl.frames import uint8_to_float


@dataclass(eq=False)
class Segment:
    """One window [start, stop) of an episode, padded with zeros where it leaves the episode (spec §2.3)."""

    obs: np.ndarray  # uint8 (T, 3, 64, 64)
    act: np.ndarray  # int64 (T,), padding 0 = NOOP
    rew: np.ndarray  # float32 (T,)
    end: np.ndarray  # bool (T,)
    trunc: np.ndarray  # bool (T,)
    mask_padding: np.ndarray  # bool (T,), True on real steps
    final_obs: np.ndarray  # uint8 (3, 64, 64), zeros unless the episode finished
    has_final_obs: bool
    episode_id: int
    start: int
    stop: int


@dataclass(eq=False)
class Batch:
    obs: torch.Tensor  # uint8 (B, T, 3, 64, 64)
    act: torch.Tensor  # int64 (B, T)
    rew: torch.Tensor  # float32 (B, T), raw
    end: torch.Tensor  # bool (B, T)
    trunc: torch.Tensor  # bool (B, T)
    mask_padding: torch.Tensor  # bool (B, T), True on real steps
    final_obs: torch.Tensor  # uint8 (B, 3, 64, 64): the episode's final observation, zeros if it has none
    has_final_obs: torch.Tensor  # bool (B,)
    segment_ids: torch.Tensor  # int64 (B, 3): (episode_id, start, stop)

    @classmethod
    def zeros(cls, batch_size: int, seq_len: int, frame_shape: tuple[int, ...] = (3, 64, 64)) -> Batch:
        """An all-padding batch, to be filled in place (zeros are the padding values of every field)."""
        b, t = batch_size, seq_len

        def zeros(*shape, dtype):  # numpy's calloc-backed zeros are much faster than torch.zeros for MBs of uint8
            return torch.from_numpy(np.zeros(shape, dtype=dtype))

        return cls(
            obs=zeros(b, t, *frame_shape, dtype=np.uint8),
            act=zeros(b, t, dtype=np.int64),
            rew=zeros(b, t, dtype=np.float32),
            end=zeros(b, t, dtype=bool),
            trunc=zeros(b, t, dtype=bool),
            mask_padding=zeros(b, t, dtype=bool),
            final_obs=zeros(b, *frame_shape, dtype=np.uint8),
            has_final_obs=zeros(b, dtype=bool),
            segment_ids=zeros(b, 3, dtype=np.int64),
        )

    @property
    def batch_size(self) -> int:
        return self.obs.shape[0]

    @property
    def seq_len(self) -> int:
        return self.obs.shape[1]

    def _map(self, fn) -> Batch:
        return Batch(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Page-locked copy, so that `.to("cuda", non_blocking=True)` overlaps with compute (DataLoader calls this)."""
        return self._map(lambda x: x.pin_memory())

    def obs_float(self) -> torch.Tensor:
        """float32 (B, T, 3, 64, 64) in [-1, 1], padding frames exactly 0.0."""
        pad = ~self.mask_padding[..., None, None, None]
        return uint8_to_float(self.obs).masked_fill_(pad, 0.0)

    def final_obs_float(self) -> torch.Tensor:
        """float32 (B, 3, 64, 64) in [-1, 1], 0.0 where the episode has no final observation."""
        return uint8_to_float(self.final_obs).masked_fill_(~self.has_final_obs[:, None, None, None], 0.0)


def collate(segments: Sequence[Segment]) -> Batch:
    """Stack segments of equal length into a Batch."""
    if len(segments) == 0:
        raise ValueError("collate needs at least one segment")

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(s, name) for s in segments]))

    return Batch(
        obs=stack("obs"),
        act=stack("act"),
        rew=stack("rew"),
        end=stack("end"),
        trunc=stack("trunc"),
        mask_padding=stack("mask_padding"),
        final_obs=stack("final_obs"),
        has_final_obs=torch.tensor([s.has_final_obs for s in segments], dtype=torch.bool),
        segment_ids=torch.tensor([[s.episode_id, s.start, s.stop] for s in segments], dtype=torch.int64),
    )
