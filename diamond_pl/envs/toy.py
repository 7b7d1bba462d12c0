"""A tiny pixel env shipped with diamond_pl, for learning checks on a CPU (`docs/learning.md`,
`tests/test_learning_loop.py`). Use it like any user env: `--data.env_id diamond_pl.envs.toy:BombCatch-v0` (gymnasium
imports this module, whose `register` call runs).

BombCatch-v0: an 8 x 8 grid with a 3-cell paddle on the bottom row that moves left / stays / right (actions 0 / 1 / 2).
First a red bomb falls straight down from a random column of the top row, one row per step: if it lands on the paddle
the episode terminates (reward 0); if the paddle dodged it, a yellow ball falls the same way, and when it lands the
episode terminates with reward +1 if the paddle caught it, -1 if not. Episodes last 7 or 14 steps. Both objects can
always be handled (7 rows to fall, at most 6 moves needed), so the best return is +1; a uniformly random policy scores
about -0.1 (it dodges ~60 % of bombs and catches ~40 % of balls).

Why a bomb and a ball: each is learnt from a different signal, so a broken training loop shows in the return. The ball
is learnt from the reward on an episode's last step (a reward stored one step off falls outside the episode); the bomb
only from the episode's end flag (its landing gives reward 0 either way: lost end flags make it harmless); both need
the world model to respond to actions. A one-object game hides some of these bugs (docs/learning.md).

Observations are RGB images, 2 pixels per cell (16 x 16: `--data.img_size 16` keeps them exact).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

GRID = 8
CELL = 2
BOMB_RGB = (255, 40, 40)
BALL_RGB = (255, 220, 0)
PADDLE_RGB = (0, 140, 255)


class BombCatch(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.spaces.Box(0, 255, (GRID * CELL, GRID * CELL, 3), np.uint8)

    def _obs(self) -> np.ndarray:
        grid = np.zeros((GRID, GRID, 3), np.uint8)
        grid[GRID - 1, self.paddle - 1: self.paddle + 2] = PADDLE_RGB
        grid[self.y, self.x] = BOMB_RGB if self.bomb else BALL_RGB  # drawn last: visible on the paddle
        return np.repeat(np.repeat(grid, CELL, axis=0), CELL, axis=1)

    def _drop(self, bomb: bool) -> None:
        self.bomb, self.x, self.y = bomb, int(self.np_random.integers(GRID)), 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.paddle = int(self.np_random.integers(1, GRID - 1))  # centre cell in 1..GRID-2: the paddle stays inside
        self._drop(bomb=True)
        return self._obs(), {}

    def step(self, action):
        self.paddle = int(np.clip(self.paddle + int(action) - 1, 1, GRID - 2))
        self.y += 1
        reward, terminated = 0.0, False
        if self.y == GRID - 1:
            on_paddle = abs(self.x - self.paddle) <= 1
            if not self.bomb:
                reward, terminated = (1.0 if on_paddle else -1.0), True
            elif on_paddle:
                terminated = True  # the bomb hit the paddle: game over, no reward
            else:
                self._drop(bomb=False)  # dodged: the ball appears at once
        return self._obs(), reward, terminated, False, {}

    def render(self) -> np.ndarray:
        return self._obs()


gym.register("BombCatch-v0", entry_point=BombCatch, max_episode_steps=100)
