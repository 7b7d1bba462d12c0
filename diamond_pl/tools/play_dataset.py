"""Dataset mode of play (DIAMOND's `play -d`, reference spec §15.3) as pure logic: which stored episode and timestep is
on screen, moved by keys. No pygame here, so it is tested without a window; `play.py` draws it.

A dataset is any episode-store folder: a run's `dataset/train` or `dataset/test`, a `play --record` folder's
`rec_*`, or an imported static dataset. `find_datasets` accepts such folders or any folder above them (a run folder,
a recordings folder) and lists every store below, in path order.

Keys: m = next dataset; Up / Down = next / previous episode; Right / Left = next / previous timestep (held keys
repeat); PageUp / PageDown = +10 / -10 timesteps; Enter = back to step 0; Escape = quit. Timestep t shows the frame
the action at t was taken on; a finished episode also has t = length, its final frame (after the last step).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from diamond_pl.data.episode import Episode, EpisodeFileError
from diamond_pl.data.store import episode_files, episodes_folder, is_episode_file
from diamond_pl.tools.common import ToolError


def find_datasets(paths: list[str | os.PathLike]) -> list[Path]:
    """Every episode-store folder at or below `paths` (a folder holding `episodes/<id>.npz` or `<id>.npz`)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ToolError(f"--dataset {path}: no such folder (give a store folder such as RUN/dataset/train, a "
                            f"run folder, or a play --record folder)")
        holders = {f.parent for f in path.rglob("*.npz") if is_episode_file(f)}
        stores = sorted({h.parent if h.name == "episodes" else h for h in holders})
        if not stores:
            raise ToolError(f"--dataset {path}: no episode files (<id>.npz) found in it or below it")
        found += [s for s in stores if s not in found]
    return found


class DatasetBrowser:
    """Holds only the episode on screen: a run's 100k-step dataset would take 1.2 GB of RAM if loaded whole."""

    def __init__(self, datasets: list[Path], action_meanings: list[str] | None = None) -> None:
        if not datasets:
            raise ToolError("dataset mode needs at least one dataset folder")
        self.datasets = datasets
        self.action_meanings = action_meanings
        self.quit = False
        self.notice = self._select(0)  # damaged files skipped to find a first episode, shown as the first message

    # ------------------------------------------------------------------------------------------------------------
    def _select(self, dataset_index: int) -> str | None:
        """Show the first episode of dataset `dataset_index` that loads; returns a note on damaged files skipped."""
        path = self.datasets[dataset_index]
        files = [f for _, f in sorted(episode_files(episodes_folder(path)).items())]
        if not files:
            raise ToolError(f"dataset {path}: no episode files (<id>.npz) in it any more")
        index, episode, skipped = self._first_loadable(files, start=0, step=1)
        self.files, self.dataset_index, self._loaded, self.t = files, dataset_index, (index, episode), 0
        return skipped

    def _step_episode(self, step: int) -> str:
        """Next (+1) or previous (-1) episode, wrapping around; damaged files are skipped with a note."""
        index, episode, skipped = self._first_loadable(self.files, start=self.episode_index + step, step=step)
        self._loaded, self.t = (index, episode), 0
        return f"episode {index}" + (f" ({skipped})" if skipped else "")

    @staticmethod
    def _first_loadable(files: list[Path], start: int, step: int) -> tuple[int, Episode, str | None]:
        """The first episode file from `start` on (in steps of `step`, wrapping) that loads. Each damaged file's full
        error goes to stderr; the returned note (for the window's one-line message) names the files."""
        damaged: list[str] = []
        for k in range(len(files)):
            index = (start + k * step) % len(files)
            try:
                episode = Episode.load(files[index])
            except EpisodeFileError as e:
                print(f"play -d: {e}", file=sys.stderr)
                damaged.append(files[index].name)
                continue
            note = f"skipped {len(damaged)} damaged file(s): {', '.join(damaged[:3])}" if damaged else None
            return index, episode, note
        raise ToolError(f"no episode file of {files[0].parent} can be read (the errors are above)")

    @property
    def episode_index(self) -> int:
        return self._loaded[0]

    @property
    def num_episodes(self) -> int:
        return len(self.files)

    @property
    def episode(self) -> Episode:
        return self._loaded[1]

    @property
    def last_t(self) -> int:
        """The last timestep that can be shown: the final frame of a finished episode, else its last step."""
        ep = self.episode
        return ep.length if ep.final_obs is not None else ep.length - 1

    @property
    def frame(self) -> np.ndarray:
        """uint8 (3, H, W) on screen."""
        ep = self.episode
        return ep.final_obs if self.t == ep.length else ep.obs[self.t]

    def handle(self, key: str) -> str | None:
        """Apply a key press; returns a short message, or None if the key means nothing here."""
        if key == "m":
            target = (self.dataset_index + 1) % len(self.datasets)
            try:
                skipped = self._select(target)
            except ToolError as e:  # stay on the dataset shown
                return f"cannot show dataset {self.datasets[target]}: {e}"
            return f"dataset {self.datasets[self.dataset_index].name}" + (f" ({skipped})" if skipped else "")
        if key in ("up", "down"):
            return self._step_episode(1 if key == "up" else -1)
        moves = {"right": 1, "left": -1, "page up": 10, "page down": -10}
        if key in moves:
            self.t = min(max(self.t + moves[key], 0), self.last_t)
            return None
        if key in ("return", "enter"):
            self.t = 0
            return None
        if key == "escape":
            self.quit = True
            return "bye"
        return None

    def _action_name(self, action: int) -> str:
        if self.action_meanings is not None and 0 <= action < len(self.action_meanings):
            return self.action_meanings[action]
        return str(action)

    def header_lines(self, message: str | None = None) -> list[str]:
        ep, t = self.episode, self.t
        rew = ep.rew.astype(np.float64)
        lines = [
            f"dataset {self.dataset_index + 1}/{len(self.datasets)}: {self.datasets[self.dataset_index]}",
            f"episode {self.episode_index}/{self.num_episodes - 1}   length {ep.length}   return {rew.sum():g} "
            f"(+{rew[rew > 0].sum():g} / {rew[rew < 0].sum():g})",
            (f"t {t}   action {self._action_name(int(ep.act[t]))}   reward {rew[t]:+g}   end {bool(ep.end[t])}   "
             f"trunc {bool(ep.trunc[t])}") if t < ep.length else f"t {t}   final frame (after the last step)",
            f"return so far {rew[:t].sum():g}   to go {rew[t:].sum():g}",
            "m dataset   Up/Down episode   Left/Right step   PgUp/PgDn 10 steps   Enter step 0   Esc quit",
        ]  # fmt: skip
        if message:
            lines.append(message)
        return lines
