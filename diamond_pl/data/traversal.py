"""Deterministic traversal of a (test) store for evaluation losses (spec §2.6).

Each episode, in id order, is cut into consecutive non-overlapping windows of length T starting at step 0; the last
window is right-padded, and dropped if it holds fewer than 2 real steps (nothing to predict from one frame). Windows
are grouped into batches of `batch_size`; the final batch may be smaller.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from diamond_pl.data.batch import Batch
from diamond_pl.data.store import EpisodeStore

MIN_REAL_STEPS = 2


def chunk_windows(lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """int64 (num_windows, 3) rows of (episode_id, start, stop), in traversal order."""
    rows = [(episode_id, start, start + seq_len)
            for episode_id, length in enumerate(np.asarray(lengths).tolist())
            for start in range(0, length, seq_len)
            if length - start >= MIN_REAL_STEPS]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


class Traversal:
    """Iterable of Batch over the whole store; re-reads the store every time it is iterated."""

    def __init__(self, store: EpisodeStore, batch_size: int, seq_len: int) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        self.store, self.batch_size, self.seq_len = store, batch_size, seq_len

    def __len__(self) -> int:
        return -(-len(chunk_windows(self.store.lengths, self.seq_len)) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        windows = chunk_windows(self.store.lengths, self.seq_len)
        for i in range(0, len(windows), self.batch_size):
            w = windows[i:i + self.batch_size]
            yield self.store.gather(w[:, 0], w[:, 1], w[:, 2])
