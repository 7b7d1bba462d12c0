"""Recording play-mode episodes (DIAMOND's `play -r`, reference spec §15.2) as pickle-free episode stores.

Every *finished* episode (the game or the world model ended it, or the horizon truncated it) is appended to
`<record_dir>/rec_<env>_<controller>/`, e.g. `recordings/rec_wm_human/episodes/000003.npz`, where env is wm / test /
train and controller is human / policy (DIAMOND names them H / π). Each folder is an `EpisodeStore`, so
`play --dataset`, `play --data-dir`, the notebook and `fit`'s static-dataset mode read it. An episode cut short by a
reset (Enter, m, the arrows) is dropped, as in DIAMOND. Files are written atomically; an existing folder is appended
to, never overwritten.

Frames are what the player saw, as uint8: real frames as the emulator gave them, imagined ones quantised as every
generated frame is (`frames.float_to_uint8`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diamond_pl.data.episode import Episode, EpisodeFileError
from diamond_pl.data.store import EpisodeStore, episode_files
from diamond_pl.tools.common import ToolError


def recording_name(env_name: str, human: bool) -> str:
    return f"rec_{env_name}_{'human' if human else 'policy'}"


class EpisodeRecorder:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ToolError(f"--record {self.directory}: exists and is not a folder; give a folder to record into")
        self._stores: dict[str, EpisodeStore] = {}
        if self.directory.is_dir():  # open earlier recordings now, so a broken one is reported before play starts
            for path in sorted(self.directory.glob("rec_*")):
                self._store(path.name)
        self.start()

    def start(self) -> None:
        """Forget the steps of the current episode (a new one begins)."""
        self._steps: list[tuple[np.ndarray, int, float, bool, bool]] = []
        self._name: str | None = None

    def add_step(self, obs: np.ndarray, action: int, reward: float, end: bool, trunc: bool, env_name: str,
                 human: bool) -> None:
        """One step: `obs` uint8 (3, H, W) is the frame the action was taken on."""
        if self._name is None:
            self._name = recording_name(env_name, human)  # who played the first step names the episode
        self._steps.append((np.asarray(obs, dtype=np.uint8).copy(), int(action), float(reward), bool(end), bool(trunc)))

    def finish(self, final_obs: np.ndarray) -> Path:
        """Append the finished episode (its last step ended or truncated it) to its store; returns the file written."""
        if not self._steps or not (self._steps[-1][3] or self._steps[-1][4]):
            raise RuntimeError("finish() needs a recorded episode whose last step is done")
        obs, act, rew, end, trunc = zip(*self._steps)
        episode = Episode(obs=np.stack(obs), act=np.array(act), rew=np.array(rew), end=np.array(end),
                          trunc=np.array(trunc), final_obs=np.asarray(final_obs, dtype=np.uint8).copy())
        store = self._store(self._name)
        path = store.path(store.add_episode(episode))
        self.start()
        return path

    def _store(self, name: str) -> EpisodeStore:
        if name not in self._stores:
            path = self.directory / name
            if episode_files(path / "episodes"):
                try:  # append after the episodes already there (ids must run 0..N-1, every file must load)
                    self._stores[name] = EpisodeStore.import_directory(path, name, read_only=False)
                except EpisodeFileError as e:
                    raise ToolError(f"--record {self.directory}: cannot append to {path}: {e}") from None
            else:
                self._stores[name] = EpisodeStore(path, name)
        return self._stores[name]
