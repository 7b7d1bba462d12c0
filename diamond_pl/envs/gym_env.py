"""Any gymnasium env with images and a `Discrete` action space, behind the pixel-env contract of `envs/base.py`.

Each sub-env is `gymnasium.make(env_id, **make_kwargs)` wrapped in `PixelObservation` (frame skip, optional max-pool,
area resize to `size` x `size` RGB), vectorised by gymnasium's `SyncVectorEnv` with same-step auto-reset, so the final
observation of a finished episode comes in the same step as the first one of the next. Truncation comes from the env's
own time limit (its registration's `max_episode_steps`, or `make_kwargs: {max_episode_steps: N}`).

The image is the observation itself when it is one (a `Box` of shape (H, W), (H, W, 1|3|4)), or else what
`env.render()` draws with `render_mode="rgb_array"` (e.g. MiniGrid, whose observation is a symbolic grid):
`pixels: auto` picks, `obs` / `render` force it. A user's own env works through gymnasium's
`"my_package.my_module:MyEnv-v0"` id syntax (the module is imported first, so its `register` call runs).

These envs cannot save their exact state, so a resumed run restarts them from a reset (see `envs/base.py`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from diamond_pl.envs.base import EnvStep
from diamond_pl.envs.resize import resize_frame

PIXEL_SOURCES = ("auto", "obs", "render")


class EnvSpecError(ValueError):
    """The env cannot be used by diamond_pl (unknown id, non-discrete actions, no images); the message says why."""


def is_image_space(space) -> bool:
    from gymnasium.spaces import Box

    shape = getattr(space, "shape", None)
    if not isinstance(space, Box) or shape is None:
        return False
    return (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))) and min(shape[:2]) >= 8


def make_single(env_id: str, make_kwargs: dict | None = None, render: bool = False):
    """`gymnasium.make`, with a clear error for an unknown id or a module that cannot be imported."""
    kwargs = dict(make_kwargs or {})
    if render:
        kwargs["render_mode"] = "rgb_array"
    try:
        return gym.make(env_id, **kwargs)
    except (gym.error.Error, ModuleNotFoundError, ImportError) as e:
        hint = (" (the part before ':' must be an importable module that registers the id)" if ":" in env_id else
                " (a registered gymnasium id, or 'my_package.my_module:MyEnv-v0' to import your module first)")
        raise EnvSpecError(f"--data.env_id {env_id!r}: gymnasium cannot make it: {e}{hint}") from None


def action_meanings(env) -> list[str]:
    """Names of the discrete actions when the env says them (Atari-style `get_action_meanings`, MiniGrid's enum)."""
    unwrapped, n = env.unwrapped, int(env.action_space.n)
    if hasattr(unwrapped, "get_action_meanings"):
        names = list(unwrapped.get_action_meanings())
    elif hasattr(unwrapped, "actions") and hasattr(unwrapped.actions, "__members__"):
        names = [m.name.upper() for m in unwrapped.actions]
    else:
        names = []
    return names if len(names) == n else [str(i) for i in range(n)]


def check_env(env, env_id: str, pixels: str) -> str:
    """Validate a made env; return the pixel source actually used ("obs" or "render")."""
    from gymnasium.spaces import Discrete

    if not isinstance(env.action_space, Discrete):
        raise EnvSpecError(
            f"--data.env_id {env_id!r}: its action space is {env.action_space}; diamond_pl needs a Discrete action "
            f"space (wrap a continuous env in a discretising gymnasium ActionWrapper of your own)"
        )
    if pixels not in PIXEL_SOURCES:
        raise EnvSpecError(f"--data.pixels {pixels!r}: use one of {', '.join(PIXEL_SOURCES)}")
    if pixels == "obs" or (pixels == "auto" and is_image_space(env.observation_space)):
        if not is_image_space(env.observation_space):
            raise EnvSpecError(
                f"--data.env_id {env_id!r}: its observations are {env.observation_space}, not images; use "
                f"--data.pixels render (frames drawn by env.render()) or an env with image observations"
            )
        return "obs"
    if "rgb_array" not in (env.metadata or {}).get("render_modes", []):
        raise EnvSpecError(
            f"--data.env_id {env_id!r}: its observations are {env.observation_space}, not images, and it cannot "
            f"render rgb_array frames; diamond_pl learns from pixels: give it image observations"
        )
    return "render"


class PixelObservation(gym.Wrapper):
    """One gymnasium env seen as frames: repeat each action `frame_skip` times (rewards summed, stop at an episode's
    end), optionally max-pool the last two frames (Atari's flicker fix), resize to uint8 (3, size, size)."""

    def __init__(self, env, size: int, pixels: str, frame_skip: int = 1, max_pool: bool = False) -> None:
        super().__init__(env)
        self.size, self.pixels, self.frame_skip, self.max_pool = size, pixels, frame_skip, max_pool
        self.start = int(env.action_space.start)  # Discrete(n, start=s): our action i is the env's s + i
        self.action_space = gym.spaces.Discrete(int(env.action_space.n))
        self.observation_space = gym.spaces.Box(0, 255, (3, size, size), np.uint8)

    def _frame(self, obs) -> np.ndarray:
        return np.asarray(self.env.render() if self.pixels == "render" else obs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return resize_frame(self._frame(obs), self.size), info

    def step(self, action):
        total, frames = 0.0, []
        for _ in range(self.frame_skip):
            obs, rew, terminated, truncated, info = self.env.step(self.start + int(action))
            total += float(rew)
            frames = [*frames[-1:], self._frame(obs)] if self.max_pool else [self._frame(obs)]
            if terminated or truncated:
                break
        frame = np.maximum(frames[0], frames[-1]) if self.max_pool else frames[-1]
        return resize_frame(frame, self.size), total, terminated, truncated, info


class GymEnv:
    """N copies of a gymnasium env stepped together (see the module docstring).

    Args:
        env_id: a registered gymnasium id, or `"my_package.my_module:MyEnv-v0"`.
        num_envs: sub-envs stepped together.
        size: side of the square RGB frames.
        frame_skip / max_pool: action repeat and max over the last two frames (1 / False: the env as it is).
        pixels: "auto", "obs" or "render" (see the module docstring).
        make_kwargs: passed to `gymnasium.make` (e.g. `max_episode_steps`, env options).
        seed: seeds sub-env i with `seed + i` at the first reset; None draws fresh entropy.
    """

    def __init__(self, env_id: str, num_envs: int = 1, *, size: int = 64, frame_skip: int = 1, max_pool: bool = False,
                 pixels: str = "auto", make_kwargs: dict | None = None, seed: int | None = None) -> None:
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        if int(num_envs) < 1 or int(frame_skip) < 1 or int(size) < 8:
            raise EnvSpecError(f"need num_envs >= 1, frame_skip >= 1 and size >= 8; got {num_envs}, {frame_skip}, {size}")
        probe = make_single(env_id, make_kwargs)
        try:
            self.pixels = check_env(probe, env_id, pixels)
            self.num_actions = int(probe.action_space.n)
            self.action_meanings = action_meanings(probe)
        finally:
            probe.close()
        self.env_id, self.num_envs, self.size = env_id, int(num_envs), int(size)
        render = self.pixels == "render"

        def make():
            return PixelObservation(make_single(env_id, make_kwargs, render), self.size, self.pixels, int(frame_skip),
                                    bool(max_pool))

        self._vec = SyncVectorEnv([make for _ in range(self.num_envs)], autoreset_mode=AutoresetMode.SAME_STEP)
        self._seed = seed
        self._started = False

    def reset(self, seed: int | None = None) -> np.ndarray:
        seed = self._seed if seed is None and not self._started else seed
        obs, _ = self._vec.reset(seed=seed)
        self._started = True
        return np.array(obs, dtype=np.uint8)

    def step(self, actions) -> EnvStep:
        if not self._started:
            raise RuntimeError("GymEnv.step() called before reset()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers of shape ({self.num_envs},), got {actions.dtype} {actions.shape}")
        if actions.size and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(f"actions must lie in [0, {self.num_actions}), got {actions.tolist()}")
        obs, rew, terminated, truncated, info = self._vec.step(actions)
        obs = np.array(obs, dtype=np.uint8)
        final_obs = obs.copy()
        if "final_obs" in info:
            for i in np.flatnonzero(info["_final_obs"]):
                final_obs[i] = info["final_obs"][i]
        n = self.num_envs
        return EnvStep(obs=obs, rew=np.asarray(rew, dtype=np.float32), end=np.asarray(terminated, dtype=bool),
                       trunc=np.asarray(truncated, dtype=bool) & ~np.asarray(terminated, dtype=bool),
                       life_loss=np.zeros(n, dtype=bool), final_obs=final_obs)

    def close(self) -> None:
        self._vec.close()

    def __enter__(self) -> GymEnv:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GymEnv({self.env_id!r}, num_envs={self.num_envs}, size={self.size}, pixels={self.pixels!r})"
