"""The game behind play mode, without any window: three environments, one actor, one episode at a time.

* "wm": the world model (`ImaginedEnv`). Each episode starts from a real 4-frame context drawn from a small real
  dataset (weights proportional to episode length, as DIAMOND's play mode): `num_steps_initial_collect` steps played by
  the agent's policy in the test env (epsilon 0), kept in a temporary folder, or a store folder given by the caller.
  The policy's LSTM is burnt in on the context's first 3 frames, as in training. An episode ends when the reward/end
  model samples an end, or after `horizon` steps (truncation).
* "test" / "train": the real game (full games / a life loss ends the episode), reset at the end of an episode.

The actor runs on every frame whoever controls the game, so its action probabilities, entropy and value can be shown
and control can pass to it mid-episode without a cold LSTM. With `record_dir`, finished episodes are saved
(`play_record.EpisodeRecorder`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diamond_pl.data.collector import Collector
from diamond_pl.data.episode import EpisodeFileError
from diamond_pl.data.sampler import SegmentSampler
from diamond_pl.data.store import EpisodeStore
from diamond_pl.frames import float_to_uint8, uint8_to_float
from diamond_pl.modules.actor_critic import ActorCriticPolicy
from diamond_pl.tools.common import ToolError
from diamond_pl.tools.imagined_env import ImaginedEnv
from diamond_pl.tools.play_record import EpisodeRecorder


@dataclass
class StepInfo:
    action: int
    reward: float
    end: bool
    trunc: bool
    entropy_bits: float  # of the policy's action distribution at the frame acted on
    value: float

    @property
    def done(self) -> bool:
        return self.end or self.trunc


class PlaySession:
    def __init__(self, agent, horizon: int = 50, num_steps_initial_collect: int = 1000, data_dir: Path | None = None,
                 seed: int | None = None, temperature: float | None = None,
                 record_dir: Path | None = None) -> None:
        self.agent = agent
        self.recorder = None if record_dir is None else EpisodeRecorder(record_dir)  # checks the folder first
        self.last_recorded: Path | None = None  # the episode file written last
        self.game = agent.game
        self.horizon = horizon
        self.seed = seed
        temperature = agent.actor_critic.loss_cfg.temperature if temperature is None else temperature
        self.actor = ActorCriticPolicy(agent.actor_critic.net, temperature)
        self.envs = {
            "test": agent.env_spec.make(1, train=False, seed=seed),
            "train": agent.env_spec.make(1, train=True, seed=None if seed is None else seed + 1),
        }
        self.action_meanings = list(self.envs["test"].action_meanings)
        self._tmp = None
        self.context_store = self._context_store(data_dir, num_steps_initial_collect, temperature)
        n = agent.denoiser.num_steps_conditioning
        self.contexts = SegmentSampler(self.context_store, batch_size=1, seq_len=n, sample_weights=None, seed=seed)
        self.wm = ImaginedEnv(agent)
        self.env_name = "wm"
        self.frame: Tensor | None = None  # float (3, H, W): what is on screen and what the next action sees
        self.frame_u8: np.ndarray | None = None  # the same frame as uint8 (3, H, W), as recorded
        self.t = 0
        self.ret = 0.0
        self.last: StepInfo | None = None

    def _context_store(self, data_dir: Path | None, num_steps: int, temperature: float) -> EpisodeStore:
        if data_dir is not None:
            try:
                return EpisodeStore.import_directory(data_dir, "contexts", read_only=True)
            except EpisodeFileError as e:
                raise ToolError(f"--data-dir {data_dir}: {e}") from None
        if num_steps < 1:
            raise ToolError("--num-steps-initial-collect must be >= 1 (or give --data-dir)")
        self._tmp = tempfile.TemporaryDirectory(prefix="diamond_pl_play_")
        store = EpisodeStore(self._tmp.name, "contexts")
        env = self.envs["test"]
        collector = Collector(env, store, ActorCriticPolicy(self.agent.actor_critic.net, temperature), 0.0,
                              reset_every_collect=False, seed=self.seed)
        with torch.no_grad():
            collector.collect(num_steps=num_steps)  # an unfinished last episode is kept, unfinished
        return store

    # ------------------------------------------------------------------------------------------------------------
    def reset(self, env_name: str | None = None) -> Tensor:
        """Start a new episode in `env_name` (default: the current env); returns the first frame."""
        if env_name is not None:
            self.env_name = env_name
        self.t, self.ret, self.last = 0, 0.0, None
        if self.recorder is not None:
            self.recorder.start()  # an episode cut short by a reset is not recorded
        if self.env_name == "wm":
            batch = self.contexts.sample()
            obs = batch.obs_float()[0]  # padding frames 0.0, as in training
            self.frame = self.wm.reset(obs, batch.act[0])
            self.frame_u8 = batch.obs[0, -1].numpy()
            self.actor.burn_in(obs[:-1])
        else:
            obs = self.envs[self.env_name].reset()
            self.actor.reset()
            self.frame_u8 = obs[0].copy()
            self.frame = uint8_to_float(torch.from_numpy(obs[0]))
        return self.frame

    def step(self, human_action: int | None) -> StepInfo:
        """One step; `human_action` None = the policy's action. The caller resets after a done step."""
        if self.frame is None:
            self.reset()
        policy_action, probs, value = self.actor.act_on_frame(self.frame)
        action = policy_action if human_action is None else int(human_action)
        if not 0 <= action < len(self.action_meanings):
            raise ValueError(f"action {action} out of range for {self.game} ({len(self.action_meanings)} actions)")
        acted_on = self.frame_u8
        if self.env_name == "wm":
            s = self.wm.step(action)
            self.frame = s.obs
            self.frame_u8 = float_to_uint8(s.obs.cpu()).numpy()
            reward, end, trunc = s.rew, s.end, self.t + 1 >= self.horizon
        else:
            out = self.envs[self.env_name].step(np.array([action]))
            reward, end, trunc = float(out.rew[0]), bool(out.end[0]), bool(out.trunc[0])
            self.frame_u8 = (out.final_obs[0] if end or trunc else out.obs[0]).copy()  # a finished episode's last frame
            self.frame = uint8_to_float(torch.from_numpy(self.frame_u8))
        self.t += 1
        self.ret += reward
        self.last = StepInfo(action, reward, end, trunc, entropy_bits(probs), value)
        if self.recorder is not None:
            self.recorder.add_step(acted_on, action, reward, end, trunc, self.env_name, human=human_action is not None)
            if end or trunc:
                self.last_recorded = self.recorder.finish(self.frame_u8)
        return self.last

    def header_lines(self, human: bool, paused: bool, message: str | None = None) -> list[str]:
        from diamond_pl.tools.play_controls import ENV_TITLES

        env = ENV_TITLES[self.env_name] + (f", horizon {self.horizon}" if self.env_name == "wm" else "")
        last = self.last
        lines = [
            f"{self.game} | {env} | control: {'human' if human else 'policy'}" + ("  [paused]" if paused else ""),
            f"t {self.t}   return {self.ret:g}" + (
                f"   reward {last.reward:+g}   action {self.action_meanings[last.action]}" if last else ""),
            (f"trunc {last.trunc}   done {last.done}   policy entropy {last.entropy_bits:.2f} bits   "
             f"value {last.value:.2f}") if last else "policy entropy / value after the first step",
            "keys: WASD+Space act   Enter reset   m human/policy   . pause   e step",
            "Left/Right env (world model, real test, real train)   Up/Down horizon   Esc quit",
        ]  # fmt: skip
        if message:
            lines.append(message)
        return lines

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def entropy_bits(probs: Tensor) -> float:
    """Entropy of an action distribution in bits (0 = deterministic, log2(A) = uniform)."""
    p = probs.clamp_min(1e-12)
    return float(-(p * p.log2()).sum())
