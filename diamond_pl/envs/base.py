"""The contract every real environment meets: a vectorised pixel env with discrete actions.

Collection, evaluation, model-free training and the tools only use this interface, so Atari (`envs/atari.py`) and any
gymnasium env (`envs/gym_env.py`) are interchangeable; `envs/spec.py` builds either from the config.

* frames are uint8, channels first, RGB: (N, 3, H, W) with H = W = the configured image size;
* rewards are raw (float32), `end` = terminated (the train env may also end on a life loss), `trunc` = truncated;
* same-step auto-reset: when sub-env i finishes, `EnvStep.obs[i]` is already the first frame of its next episode and
  `EnvStep.final_obs[i]` the last frame of the finished one;
* `reset(seed)` seeds sub-env i with `seed + i`;
* optionally `state_dict()` / `load_state_dict()` (plain values and bytes only) when the backend can save its exact
  state: then a resumed run continues the episode in progress bit-exactly; without it the collector restarts from a
  reset and the unfinished episode stays unfinished in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class EnvStep:
    """One step of N envs (numpy arrays)."""

    obs: np.ndarray  # uint8 (N,3,H,W): next observation (first obs of the new episode for envs that were reset)
    rew: np.ndarray  # float32 (N,): raw reward (summed over skipped frames)
    end: np.ndarray  # bool (N,): terminated (Atari train env: also on life loss)
    trunc: np.ndarray  # bool (N,): truncated (time limit)
    life_loss: np.ndarray  # bool (N,): raw life loss of the step (always False where an env has no lives)
    final_obs: np.ndarray  # uint8 (N,3,H,W): last observation of the finished episode, valid where end | trunc


@runtime_checkable
class PixelEnv(Protocol):
    num_envs: int
    num_actions: int
    action_meanings: list[str]

    def reset(self, seed: int | None = None) -> np.ndarray:
        """uint8 (N, 3, H, W)."""
        ...

    def step(self, actions: np.ndarray) -> EnvStep:
        """int (N,) actions in [0, num_actions)."""
        ...

    def close(self) -> None: ...
