"""SegmentSampler: random training windows from an EpisodeStore (spec §2.4), one fresh batch per call.

1. Episode weights. With weights w_1..w_K (default [0.1, 0.1, 0.1, 0.7]) the episodes, in id (= chronological)
   order, form K contiguous groups of floor(N/K) episodes, the last group also taking the N mod K leftovers; each
   episode of group k gets w_k / |group k|. So 70 % of windows come from the newest quarter of episodes, uniformly per
   *episode* (in the train set an episode is a life). Without weights, or with fewer episodes than weights, episodes
   are weighted by length (uniform over steps).
2. B episodes are drawn with replacement; in each a step t uniform in [0, L).
3. Window of length T around t:
   * `can_sample_beyond_end=False` (denoiser, imagination contexts): stop = min(L, t + 1 + U{0..T-1}),
     start = stop - T. The window ends on a real step, padding only on the left. The clamp makes windows ending on the
     last step (T + 1) / 2 times as likely as any other end (kept from the reference).
   * `can_sample_beyond_end=True` (reward/end model): start = t - U{0..T-1}, stop = start + T; padding on both sides.
4. `with_final_obs=True` (the denoiser with `data.denoiser_final_obs`; not in the reference): a finished episode's
   `final_obs` counts as one more frame (L + 1 frames), so windows can end on it and the denoiser learns the last
   transition of an episode too. Without it the denoiser never sees a frame that only the end of an episode shows
   (a goal reached, a game won), and the world model cannot imagine one.

With data-parallel training, rank r only sees episodes r, r + world_size, ... (weights are computed over those).
The random state is a numpy Generator owned by the sampler; `state_dict()` exposes it as plain Python values.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Iterator, Sequence

import numpy as np

from diamond_pl.data.batch import Batch
from diamond_pl.data.store import EpisodeStore

DEFAULT_SAMPLE_WEIGHTS = (0.1, 0.1, 0.1, 0.7)


def check_sample_weights(sample_weights: Sequence[float] | None) -> np.ndarray | None:
    """Validate the chronological-group weights; None means length-proportional sampling."""
    if sample_weights is None:
        return None
    if isinstance(sample_weights, (str, bytes)) or not hasattr(sample_weights, "__len__"):
        raise ValueError(f"sample_weights must be a list of numbers summing to 1 or None, got {sample_weights!r}")
    values = list(sample_weights)
    bad = [w for w in values if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(w)]
    if not values or bad:
        raise ValueError(f"sample_weights must be a non-empty list of finite numbers, got {sample_weights!r}")
    if any(w < 0 for w in values):
        raise ValueError(f"sample_weights must be non-negative, got {sample_weights!r}")
    if not math.isclose(sum(values), 1.0, rel_tol=0, abs_tol=1e-6):
        raise ValueError(f"sample_weights must sum to 1, got {sample_weights!r} (sum {sum(values)})")
    return np.asarray(values, dtype=np.float64)


def episode_weights(lengths: np.ndarray, sample_weights: np.ndarray | None) -> np.ndarray:
    """Sampling probability of each episode (in chronological order), step 1 of the module docstring."""
    n = len(lengths)
    if sample_weights is None or n < len(sample_weights):
        p = np.asarray(lengths, dtype=np.float64)
    else:
        k = len(sample_weights)
        group = np.minimum(np.arange(n) // (n // k), k - 1)
        sizes = np.bincount(group, minlength=k)
        p = sample_weights[group] / sizes[group]
    return p / p.sum()


class SegmentSampler:
    def __init__(self, store: EpisodeStore, batch_size: int, seq_len: int,
                 sample_weights: Sequence[float] | None = DEFAULT_SAMPLE_WEIGHTS, can_sample_beyond_end: bool = False,
                 seed: int | None = None, rank: int = 0, world_size: int = 1, with_final_obs: bool = False) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        self.store = store
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.sample_weights = check_sample_weights(sample_weights)
        self.can_sample_beyond_end = can_sample_beyond_end
        if with_final_obs and can_sample_beyond_end:
            raise ValueError("with_final_obs is for windows that end on a real frame (can_sample_beyond_end=False)")
        self.with_final_obs = with_final_obs
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.default_rng(seed)
        self._cached_for: int | None = None  # store.version the cached ids/cdf belong to

    def _episodes_and_cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """Episode ids this rank sees and the cumulative distribution over them (recomputed when the store changes)."""
        if self._cached_for != self.store.version:
            n = len(self.store)
            if n == 0:
                raise ValueError(f"{self.store.name} is empty: collect or import episodes before sampling")
            ids = np.arange(self.rank, n, self.world_size)
            if len(ids) == 0:  # fewer episodes than ranks: share them rather than crash
                ids = np.arange(n)
            cdf = np.cumsum(episode_weights(self.store.lengths[ids], self.sample_weights))
            self._ids, self._cdf, self._cached_for = ids, cdf, self.store.version
        return self._ids, self._cdf

    def sample_windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(episode_ids, starts, stops), each int64 (B,)."""
        ids, cdf = self._episodes_and_cdf()
        b, t_len = self.batch_size, self.seq_len
        k = np.minimum(np.searchsorted(cdf, self.rng.random(b) * cdf[-1], side="right"), len(ids) - 1)
        episode_ids = ids[k]
        lengths = self.store.lengths[episode_ids]
        if self.with_final_obs:
            lengths = lengths + self.store.finished[episode_ids]
        t = self.rng.integers(0, lengths)
        offset = self.rng.integers(0, t_len, size=b)
        if self.can_sample_beyond_end:
            starts = t - offset
            stops = starts + t_len
        else:
            stops = np.minimum(lengths, t + 1 + offset)
            starts = stops - t_len
        return episode_ids, starts, stops

    def sample(self) -> Batch:
        return self.store.gather(*self.sample_windows(), with_final_obs=self.with_final_obs)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.sample()

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
