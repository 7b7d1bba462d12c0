"""EnvSpec: which real environment a run uses, built from the config's `data` section, and the factory for it.

`data.game` selects one of the 26 Atari-100k games (DIAMOND's protocol, `envs/atari.py`); `data.env_id` selects any
gymnasium env with images and discrete actions instead (`envs/gym_env.py`). Everything else in diamond_pl (agent,
collection callback, tools) gets an `EnvSpec` and calls `make(...)`: it never names Atari. Games, action meanings and
human-normalised scores stay Atari concerns: other envs report raw returns.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from diamond_pl.envs.base import PixelEnv


@dataclass(frozen=True)
class EnvSpec:
    """
    Args:
        game: Atari-100k game (used when `env_id` is None).
        env_id: any gymnasium env id with image observations (or rendering) and a Discrete action space, or
            `"my_package.my_module:MyEnv-v0"`; overrides `game`.
        img_size: side of the square RGB frames every network and the replay store use (paper: 64).
        frame_skip / max_pool: gymnasium envs only: action repeat and max over the last two frames (Atari's protocol
            fixes its own: 4 and max-pool).
        pixels: gymnasium envs only: frames from the observation ("obs"), from `env.render()` ("render") or
            whichever applies ("auto").
        make_kwargs: gymnasium envs only: keyword arguments of `gymnasium.make` (e.g. `max_episode_steps`).
    """

    game: str | None = "Breakout"
    env_id: str | None = None
    img_size: int = 64
    frame_skip: int = 1
    max_pool: bool = False
    pixels: str = "auto"
    make_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.env_id is None:
            from diamond_pl.games import validate_game

            object.__setattr__(self, "game", validate_game(self.game or ""))
        else:
            object.__setattr__(self, "game", None)  # env_id wins over the (default) game
        if not 8 <= int(self.img_size) <= 512:
            raise ValueError(f"--data.img_size {self.img_size}: use a frame side in 8..512 (paper: 64)")
        if self.is_atari and int(self.img_size) > 160:
            raise ValueError(f"--data.img_size {self.img_size}: Atari screens are 160 wide; use at most 160")
        if int(self.frame_skip) < 1:
            raise ValueError(f"--data.frame_skip {self.frame_skip}: use 1 (no skip) or more")

    @property
    def is_atari(self) -> bool:
        return self.env_id is None

    @property
    def name(self) -> str:
        """What logs and run folders are named after: the game, or the env id."""
        return self.game if self.is_atari else self.env_id

    @property
    def slug(self) -> str:
        """`name` as a folder name: `breakout`, `minigrid-empty-5x5-v0`, `my_pkg.envs-myenv-v0`."""
        name = self.name.rsplit(":", 1)[-1]  # "my_pkg.mod:MyEnv-v0": the env, not its module
        return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-")

    @property
    def num_actions(self) -> int:
        if self.is_atari:
            from diamond_pl.games import num_actions

            return num_actions(self.game)
        return _probe(self.env_id, _frozen(self.make_kwargs), self.pixels)[0]

    @property
    def action_meanings(self) -> list[str]:
        if self.is_atari:  # ALE knows them: one emulator, started and closed (~0.2 s)
            env = self.make(1, train=False)
            try:
                return list(env.action_meanings)
            finally:
                env.close()
        return list(_probe(self.env_id, _frozen(self.make_kwargs), self.pixels)[1])

    def normalised_score(self, ret: float) -> float | None:
        """Human-normalised score of a return for Atari games; None for other envs (no reference scores)."""
        if not self.is_atari:
            return None
        from diamond_pl.games import human_normalised_score

        return human_normalised_score(self.game, ret)

    def make(self, num_envs: int = 1, *, train: bool, noop_max: int = 30, seed: int | None = None) -> PixelEnv:
        """The real env: `train=True` is the collection env (Atari: a life loss ends the episode), False the test env
        (full games). `noop_max` is Atari's random reset no-ops."""
        if self.is_atari:
            from diamond_pl.envs.atari import AtariEnv

            return AtariEnv(self.game, num_envs, done_on_life_loss=train, noop_max=noop_max, size=self.img_size,
                            seed=seed)
        from diamond_pl.envs.gym_env import GymEnv

        return GymEnv(self.env_id, num_envs, size=self.img_size, frame_skip=self.frame_skip, max_pool=self.max_pool,
                      pixels=self.pixels, make_kwargs=dict(self.make_kwargs), seed=seed)

    def to_dict(self) -> dict:
        """Plain values (checkpoint hyperparameters load with weights_only=True)."""
        return {**asdict(self), "make_kwargs": dict(self.make_kwargs)}

    @classmethod
    def from_dict(cls, d: dict | EnvSpec | None) -> EnvSpec:
        if isinstance(d, EnvSpec):
            return d
        d = dict(d or {})
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown env settings {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**{**d, "make_kwargs": dict(d.get("make_kwargs") or {})})


def _frozen(d: dict) -> str:
    return json.dumps(d, sort_keys=True)  # a hashable cache key (make_kwargs come from YAML: JSON values)


@lru_cache(maxsize=32)
def _probe(env_id: str, frozen_kwargs: str, pixels: str) -> tuple[int, tuple[str, ...]]:
    """(number of actions, action meanings) of a gymnasium env, from one instance made and closed (cached)."""
    from diamond_pl.envs.gym_env import action_meanings, check_env, make_single

    env = make_single(env_id, json.loads(frozen_kwargs))
    try:
        check_env(env, env_id, pixels)
        return int(env.action_space.n), tuple(action_meanings(env))
    finally:
        env.close()
