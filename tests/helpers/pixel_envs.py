"""Tiny gymnasium envs the tests define and register themselves (ids usable as `pixel_envs:Catch-v0` from a
subprocess whose PYTHONPATH holds tests/helpers).

Catch: a ball falls down a 10x10 grid, one row per step; the paddle on the bottom row moves left / stays / right.
+1 when the ball lands on the paddle, -1 when it misses; the episode terminates after the third ball. Observations are
RGB images (H, W, 3) scaled up 2x (20x20), so the env goes through diamond_pl's resize.
"""

import gymnasium as gym
import numpy as np

SIZE = 10


class Catch(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, balls: int = 3, render_mode: str | None = None) -> None:
        self.balls, self.render_mode = balls, render_mode
        self.action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.spaces.Box(0, 255, (2 * SIZE, 2 * SIZE, 3), np.uint8)

    def _obs(self) -> np.ndarray:
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        img[self.ball_y, self.ball_x] = (255, 255, 0)
        img[SIZE - 1, max(0, self.paddle - 1): self.paddle + 2] = (0, 128, 255)
        return np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)

    def _new_ball(self) -> None:
        self.ball_x, self.ball_y = int(self.np_random.integers(SIZE)), 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.paddle, self.caught = SIZE // 2, 0
        self._new_ball()
        return self._obs(), {}

    def step(self, action):
        self.paddle = int(np.clip(self.paddle + int(action) - 1, 1, SIZE - 2))
        self.ball_y += 1
        reward, terminated = 0.0, False
        if self.ball_y == SIZE - 1:
            reward = 1.0 if abs(self.ball_x - self.paddle) <= 1 else -1.0
            self.caught += 1
            terminated = self.caught >= self.balls
            if not terminated:
                self._new_ball()
        return self._obs(), reward, terminated, False, {}

    def render(self):
        return self._obs()


class NoImages(gym.Env):
    """Vector observations and no rendering: not usable from pixels."""

    metadata = {"render_modes": []}
    action_space = gym.spaces.Discrete(2)
    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 0.0, True, False, {}


class Continuous(Catch):
    """Images, but continuous actions."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)


gym.register("Catch-v0", entry_point=Catch, max_episode_steps=100)
gym.register("NoImages-v0", entry_point=NoImages)
gym.register("Continuous-v0", entry_point=Continuous)
