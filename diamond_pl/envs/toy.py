"""Tiny pixel envs shipped with diamond_pl, for learning checks on a CPU (`docs/learning.md`,
`tests/test_learning_loop.py`). Use them like any user env: `--data.env_id diamond_pl.envs.toy:BombCatch-v0`
(gymnasium imports this module, whose `register` calls run).

BombCatch-v0: a 4 x 4 grid drawn at 4 pixels per cell (16 x 16 RGB), a one-cell paddle on the bottom row that moves
left / stays / right (actions 0 / 1 / 2). Two bombs, then a ball, fall one row per step; on the step after an object
reaches the bottom row it is resolved:
  1. a red bomb appears over the paddle; if it lands on the paddle the game is lost, else
  2. a purple bomb appears over the paddle and does the same, then
  3. a yellow ball appears in the purple bomb's column; the game is won if it lands on the paddle, lost if not.
The step that ends the game shows a resolution frame: the paddle alone, red (hit by a bomb), yellow (caught the ball)
or blue (dropped it). The next step ends the episode, with reward +1 after a catch, 0 otherwise. Episodes last 5, 9
or 13 steps. Every object can be handled (3 moves while it falls), so the best return is +1; a uniformly random
policy scores 0.10 (std 0.30), and a policy that catches every ball it sees but ignores the bombs about 0.39 (it
survives both bombs in 39 % of episodes).

BombCatchMini-v0, for the CI learning test: the same game on a 2 x 2 grid (8 x 8 RGB) with one bomb, and the
resolution frame fills the whole screen with the outcome's colour. Episodes last 3 or 5 steps; a random policy
scores 4 / 27 = 0.15 (dodge 1 / 3, then end under the ball 4 / 9). Its world model learns in fewer updates
(docs/learning.md, "The learning test"): random play catches 40 balls per 1,000 steps (11 in BombCatch-v0), and a
whole-screen outcome weighs on the denoiser's loss where a one-cell one hardly does (and does not look like a ball
landing on the paddle).

Why it looks like this: each part of DIAMOND's loop is needed, so a broken loop shows in the return.
- The ball is learnt only from the reward on an episode's last step: a reward stored one step late falls outside the
  episode, and nothing else pays.
- The bombs are learnt only from the end flag (their outcome is reward 0 either way): without end flags the imagined
  game goes on after a hit, and bombs are harmless.
- Dodging and catching both need the world model to respond to actions.
- A dropped ball pays 0, not -1: with -1 a weak policy learns to end the game on the first bomb (0 beats -1).
- After the reset the dynamics are deterministic (the next object's place follows from the frames; the bombs'
  colours tell which object comes next).
- The outcome is on a frame the denoiser trains on. Its windows end at an episode's last step (as in the reference),
  so it never learns the final frame, the one after the last step. In imagination the reward/end model sees a
  generated frame in that place: if it had learnt to read the outcome there (a frame the denoiser never drew), it
  would miss imagined catches. Here the outcome is on the resolution frame (the last step's observation), which the
  denoiser does learn, and the final frame repeats it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

GRID, CELL = 4, 4
BOMB_RGB = ((255, 40, 40), (190, 0, 255))  # first and second bomb: different colours, so a frame tells which comes next
BALL_RGB = (255, 220, 0)
PADDLE_RGB = (0, 140, 255)
OUTCOME_RGB = {"hit": BOMB_RGB[0], "caught": BALL_RGB, "dropped": PADDLE_RGB}  # resolution frame colour


class BombCatch(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self, render_mode: str | None = None, grid: int = GRID, bombs: int = 2, outcome_fills_screen: bool = False
    ) -> None:
        if grid < 2:
            raise ValueError(f"BombCatch: grid {grid} must be >= 2")
        if bombs not in (0, 1, 2):
            raise ValueError(f"BombCatch: bombs {bombs} must be 0, 1 or 2 (there are two bomb colours)")
        self.render_mode, self.grid, self.bombs = render_mode, grid, bombs
        self.outcome_fills_screen = outcome_fills_screen
        self.action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.spaces.Box(0, 255, (grid * CELL, grid * CELL, 3), np.uint8)

    def _obs(self) -> np.ndarray:
        bottom = self.grid - 1
        cells = np.zeros((self.grid, self.grid, 3), np.uint8)
        if self.outcome is None:
            cells[bottom, self.paddle] = PADDLE_RGB
            cells[self.y, self.x] = BOMB_RGB[self.stage] if self.stage < self.bombs else BALL_RGB  # over the paddle
        elif self.outcome_fills_screen:  # the resolution frame: the whole screen in the outcome's colour
            cells[:] = OUTCOME_RGB[self.outcome]
        else:  # the resolution frame: the paddle alone, coloured by the outcome
            cells[bottom, self.paddle] = OUTCOME_RGB[self.outcome]
        return np.repeat(np.repeat(cells, CELL, axis=0), CELL, axis=1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.paddle = int(self.np_random.integers(self.grid))
        self.stage, self.x, self.y = 0, self.paddle, 0  # stage < bombs: a bomb; stage == bombs: the ball
        self.outcome: str | None = None  # set when an object ends the game: "hit", "caught" or "dropped"
        return self._obs(), {}

    def step(self, action):
        if self.outcome is not None:  # the step after the resolution frame ends the episode; the screen stays as it is
            return self._obs(), float(self.outcome == "caught"), True, False, {}
        landed = self.y == self.grid - 1  # the object reached the bottom row on the previous step: resolve it now
        on_paddle = self.x == self.paddle
        self.paddle = int(np.clip(self.paddle + int(action) - 1, 0, self.grid - 1))
        if not landed:
            self.y += 1
        elif self.stage == self.bombs:
            self.outcome = "caught" if on_paddle else "dropped"
        elif on_paddle:
            self.outcome = "hit"
        else:  # dodged: the next object appears at the top, over the paddle (a bomb) or in the bomb's column (the ball)
            self.stage += 1
            self.x, self.y = (self.paddle if self.stage < self.bombs else self.x), 0
        return self._obs(), 0.0, False, False, {}

    def render(self) -> np.ndarray:
        return self._obs()


gym.register("BombCatch-v0", entry_point=BombCatch, max_episode_steps=100)
gym.register(
    "BombCatchMini-v0", entry_point=BombCatch, kwargs={"grid": 2, "bombs": 1, "outcome_fills_screen": True},
    max_episode_steps=100,
)
