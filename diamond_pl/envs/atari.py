"""Real Atari environment: the ``<Game>NoFrameskip-v4`` protocol of the reference (spec §1), vectorised.

Each sub-environment is one ``ale_py.ALEInterface`` driven from Python, so that every detail of the reference's
preprocessing wrapper is reproduced and its whole state can be checkpointed:

* minimal action set (action 0 is NOOP), no sticky actions, no fire-on-reset, raw (unclipped) rewards;
* ALE's own ``max_num_frames_per_episode = 108_000`` truncation (counted in emulator frames, reset no-ops included),
  reported as ``trunc``;
* frame skip 4: the action is repeated for up to 4 frames, rewards summed; a frame that terminates or truncates the
  episode stops the repetition *before* its screen is read; the 3rd frame's screen goes to buffer 1, the 4th's to
  buffer 0, and the observation is the pixel-wise max of the two buffers, written in place into buffer 0 (so an early
  stop reuses the previous max, exactly as the reference does);
* life loss: after each frame, if ``lives()`` dropped below the stored count, flag it and store the new count (the
  count is *not* raised when a bonus life is won, as in the reference);
* reset: ``reset_game()``, then k single-frame no-ops (action 0) with k uniform in ``1..noop_max`` drawn from the
  env's own generator (``noop_max=0``: none); a no-op that ends the game resets it again;
* 64x64 RGB by area interpolation, identical to ``cv2.resize(..., interpolation=cv2.INTER_AREA)`` for the sizes used
  here (see :func:`area_resize_weights`);
* seeding as ale-py's ``AtariEnv.seed_game``: ``SeedSequence(seed + i)`` gives the no-op generator's seed and ALE's
  ``random_seed`` for sub-env i, so a seeded reset draws the same no-op counts as the reference with the same seed.

Vectorisation follows gymnasium's same-step autoreset: when a sub-env's episode ends (game over or truncation) it is
reset within the same ``step`` call, ``EnvStep.obs`` holds the first observation of the new episode and
``EnvStep.final_obs`` the last observation of the finished one. With ``done_on_life_loss=True`` (train env) a life
loss also sets ``end`` but the game is *not* reset: the next observation continues the same game and ``final_obs`` is
that same observation. A life loss in the same step as a truncation does not set ``end`` (the reference's autoreset
replaces the life-loss flag with the reset's). ``EnvStep.life_loss`` always reports the raw life loss of the step.

Sub-envs are stepped one after another in the calling thread (ALE does not release the GIL, so threads would not
help): roughly 1k agent steps per second (ALE emulation dominates; the resize takes ~0.1-0.3 ms). No threads, no
subprocesses, so nothing to tune on small machines.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from diamond_pl.envs.base import EnvStep
from diamond_pl.envs.resize import area_resize, area_resize_weights
from diamond_pl.games import gym_id, validate_game

__all__ = ["AtariEnv", "EnvStep", "area_resize", "area_resize_weights", "rom_name"]

FRAME_SKIP = 4
MAX_NUM_FRAMES_PER_EPISODE = 108_000
SCREEN_HW = (210, 160)
STATE_VERSION = 1


def rom_name(game: str) -> str:
    """ale-py ROM id of a game: ``MsPacman`` -> ``ms_pacman`` (validates the name first)."""
    name = validate_game(game)
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _ale_seeds(seed: int | None) -> tuple[int, int]:
    """(numpy seed, ALE random_seed) derived like ale-py's ``AtariEnv.seed_game``."""
    np_seed, ale_seed = np.random.SeedSequence(seed).generate_state(n_words=2)
    return int(np_seed), int(np.array(ale_seed, dtype=np.uint32).view(np.int32))


class _Game:
    """One emulator with the reference's preprocessing (no vectorisation, no life-loss termination)."""

    def __init__(self, rom_path: str, size: int, seed: int | None):
        import ale_py

        self.rom_path = rom_path
        self.size = size
        self.ale = ale_py.ALEInterface()
        self.ale.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale.setFloat("repeat_action_probability", 0.0)
        self.ale.setInt("max_num_frames_per_episode", MAX_NUM_FRAMES_PER_EPISODE)
        self.rng = np.random.default_rng()
        self.loaded = False
        self.seed(seed)
        self.action_set: list = []
        self.buffers = [np.zeros((*SCREEN_HW, 3), dtype=np.uint8), np.zeros((*SCREEN_HW, 3), dtype=np.uint8)]
        self.lives = 0
        self.last_noops = 0

    def seed(self, seed: int | None) -> None:
        """Seed like ale-py's ``seed_game``; the ROM is (re)loaded lazily, on first use, so the new ALE seed applies."""
        np_seed, ale_seed = _ale_seeds(seed)
        self.rng = np.random.default_rng(np_seed)
        self.ale.setInt("random_seed", ale_seed)
        self.loaded = False

    def ensure_loaded(self) -> None:
        # loadROM is slow (~0.1-0.3 s), so a seeded first reset right after construction loads only once
        if not self.loaded:
            self.ale.loadROM(self.rom_path)
            self.loaded = True
            self.action_set = list(self.ale.getMinimalActionSet())
            if tuple(self.ale.getScreenDims()) != SCREEN_HW:
                raise RuntimeError(f"unexpected Atari screen size {self.ale.getScreenDims()}")

    def _over(self) -> tuple[bool, bool]:
        return self.ale.game_over(with_truncation=False), self.ale.game_truncated()

    def reset(self, noop_max: int, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self.seed(seed)
        self.ensure_loaded()
        self.ale.reset_game()
        noops = int(self.rng.integers(1, noop_max + 1)) if noop_max > 0 else 0
        self.last_noops = noops
        for _ in range(noops):
            self.ale.act(self.action_set[0])
            if any(self._over()):
                if seed is not None:
                    self.seed(seed)
                    self.ensure_loaded()
                self.ale.reset_game()
        self.lives = self.ale.lives()
        self.ale.getScreenRGB(self.buffers[0])
        self.buffers[1].fill(0)
        return self.observation()

    def step(self, action: int) -> tuple[float, bool, bool, bool]:
        ale_action = self.action_set[action]
        reward = 0.0
        terminated = truncated = life_loss = False
        for t in range(FRAME_SKIP):
            reward += self.ale.act(ale_action)
            terminated, truncated = self._over()
            lives = self.ale.lives()
            if lives < self.lives:
                life_loss = True
                self.lives = lives
            if terminated or truncated:
                break
            if t == FRAME_SKIP - 2:
                self.ale.getScreenRGB(self.buffers[1])
            elif t == FRAME_SKIP - 1:
                self.ale.getScreenRGB(self.buffers[0])
        return reward, terminated, truncated, life_loss

    def observation(self) -> np.ndarray:
        np.maximum(self.buffers[0], self.buffers[1], out=self.buffers[0])
        return area_resize(self.buffers[0], self.size)

    def state_dict(self) -> dict[str, Any]:
        self.ensure_loaded()
        return {
            "ale_state": bytes(self.ale.cloneState(include_rng=True).serialize()),
            "rng": self.rng.bit_generator.state,
            "lives": int(self.lives),
            "buffer0": zlib.compress(self.buffers[0].tobytes(), 1),
            "buffer1": zlib.compress(self.buffers[1].tobytes(), 1),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import ale_py

        self.ensure_loaded()
        self.ale.restoreState(ale_py.ALEState(state["ale_state"]))
        self.rng.bit_generator.state = state["rng"]
        self.lives = int(state["lives"])
        for buf, key in zip(self.buffers, ("buffer0", "buffer1")):
            data = np.frombuffer(zlib.decompress(state[key]), dtype=np.uint8)
            if data.size != buf.size:
                raise ValueError(f"env state {key!r} has {data.size} bytes, expected {buf.size}")
            buf[...] = data.reshape(buf.shape)


class AtariEnv:
    """N Atari games with DIAMOND's preprocessing (see the module docstring).

    Args:
        game: one of the 26 Atari-100k games (``Breakout``, ``breakout`` or ``BreakoutNoFrameskip-v4``).
        num_envs: number of games stepped together.
        done_on_life_loss: True for the train env (a life loss ends the "episode" without resetting the game),
            False for the test env (full games).
        noop_max: reset no-ops are uniform in ``1..noop_max``; 0 disables them.
        size: observation side (64).
        seed: seeds sub-env i with ``seed + i`` at construction; None draws fresh entropy.

    ``state_dict()`` captures everything needed to continue exactly: per sub-env the ALE state with its RNG
    (``cloneState(include_rng=True)``, as bytes; it includes the episode frame number that drives truncation), the
    no-op generator state, the stored lives count and the two screen buffers (zlib-compressed bytes; buffer 0 holds
    the last max-pooled frame, which an episode ending early in the next frame skip reuses); about 25 KB per sub-env.
    Everything is restorable. Values are bytes/ints/bools/str/dicts/lists only, so checkpoints load with
    ``weights_only=True``. ``load_state_dict`` refuses (ValueError) a state from an env with another game, number of
    sub-envs, size, life-loss mode or ``noop_max``.
    """

    def __init__(
        self,
        game: str,
        num_envs: int = 1,
        *,
        done_on_life_loss: bool,
        noop_max: int = 30,
        size: int = 64,
        seed: int | None = None,
    ):
        self.game = validate_game(game)  # before any emulator starts
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if int(noop_max) < 0:
            raise ValueError(f"noop_max must be >= 0, got {noop_max}")
        if not 0 < int(size) <= 160:
            raise ValueError(f"size must be in 1..160 (area interpolation only downsamples), got {size}")
        from ale_py import roms

        rom_path = roms.get_rom_path(rom_name(self.game))
        if rom_path is None:
            raise RuntimeError(f"ale-py has no ROM for {self.game!r} (expected {rom_name(self.game)!r})")
        self.gym_id = gym_id(self.game)
        self.num_envs = int(num_envs)
        self.done_on_life_loss = bool(done_on_life_loss)
        self.noop_max = int(noop_max)
        self.size = int(size)
        self._games: list[_Game] = []
        for i in range(self.num_envs):
            self._games.append(_Game(str(rom_path), self.size, None if seed is None else int(seed) + i))
        self._games[0].ensure_loaded()
        action_set = self._games[0].action_set
        self.num_actions = len(action_set)
        self.action_meanings: list[str] = [a.name for a in action_set]
        if self.action_meanings[0] != "NOOP":
            raise RuntimeError(f"{self.gym_id}: action 0 is {self.action_meanings[0]}, expected NOOP")
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every sub-env (seeded with ``seed + i`` if given) -> uint8 (N,3,H,W)."""
        self._check_open()
        obs = np.empty((self.num_envs, 3, self.size, self.size), dtype=np.uint8)
        for i, g in enumerate(self._games):
            obs[i] = g.reset(self.noop_max, None if seed is None else int(seed) + i)
        self._started = True
        return obs

    def step(self, actions) -> EnvStep:
        """Step every sub-env with its action (ints in ``[0, num_actions)``, shape (N,))."""
        self._check_open()
        if not self._started:
            raise RuntimeError("AtariEnv.step() called before reset()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(
                f"actions must be integers of shape ({self.num_envs},), got {actions.dtype} {actions.shape}"
            )
        if actions.size and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(f"actions must lie in [0, {self.num_actions}), got {actions.tolist()}")
        n, s = self.num_envs, self.size
        obs = np.empty((n, 3, s, s), dtype=np.uint8)
        final_obs = np.empty((n, 3, s, s), dtype=np.uint8)
        rew = np.zeros(n, dtype=np.float32)
        end = np.zeros(n, dtype=bool)
        trunc = np.zeros(n, dtype=bool)
        life_loss = np.zeros(n, dtype=bool)
        for i, g in enumerate(self._games):
            r, terminated, truncated, lost = g.step(int(actions[i]))
            frame = g.observation()
            final_obs[i] = frame
            rew[i] = r
            trunc[i] = truncated
            life_loss[i] = lost
            end[i] = terminated or (self.done_on_life_loss and lost and not truncated)
            obs[i] = g.reset(self.noop_max) if (terminated or truncated) else frame
        return EnvStep(obs=obs, rew=rew, end=end, trunc=trunc, life_loss=life_loss, final_obs=final_obs)

    def close(self) -> None:
        self._games = []
        self._closed = True

    def __enter__(self) -> AtariEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("AtariEnv is closed")

    # ------------------------------------------------------------------------------------------------------------
    @property
    def lives(self) -> np.ndarray:
        """Stored lives count per sub-env (int64 (N,))."""
        return np.array([g.lives for g in self._games], dtype=np.int64)

    @property
    def episode_frame_numbers(self) -> np.ndarray:
        """ALE episode frame number per sub-env (reset no-ops included; truncation at 108,000)."""
        return np.array([g.ale.getEpisodeFrameNumber() if g.loaded else 0 for g in self._games], dtype=np.int64)

    def current_obs(self) -> np.ndarray:
        """The observation each sub-env would return now (uint8 (N,3,H,W)); valid after reset()."""
        self._check_open()
        return np.stack([area_resize(g.buffers[0], self.size) for g in self._games])

    def state_dict(self) -> dict[str, Any]:
        self._check_open()
        return {
            "version": STATE_VERSION,
            "game": self.game,
            "num_envs": self.num_envs,
            "done_on_life_loss": self.done_on_life_loss,
            "noop_max": self.noop_max,
            "size": self.size,
            "started": self._started,
            "envs": [g.state_dict() for g in self._games],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of an env with the same configuration."""
        self._check_open()
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported AtariEnv state version {state.get('version')!r} (expected {STATE_VERSION})")
        for key in ("game", "num_envs", "size", "done_on_life_loss", "noop_max"):
            if state[key] != getattr(self, key):
                raise ValueError(f"AtariEnv state has {key}={state[key]!r}, this env has {getattr(self, key)!r}")
        if len(state["envs"]) != self.num_envs:
            raise ValueError(f"AtariEnv state holds {len(state['envs'])} sub-envs, expected {self.num_envs}")
        for g, s in zip(self._games, state["envs"]):
            g.load_state_dict(s)
        self._started = bool(state["started"])

    def __repr__(self) -> str:
        return (
            f"AtariEnv({self.game!r}, num_envs={self.num_envs}, done_on_life_loss={self.done_on_life_loss}, "
            f"noop_max={self.noop_max}, size={self.size})"
        )
