"""EpisodeStore: the replay dataset of one split, in RAM (uint8) and on disk (one .npz per episode).

RAM holds every episode exactly as collected (uint8 frames), so training never reads frames back from disk and never
round-trips them through float (spec §13 item 1): 100k steps of 64x64 RGB cost about 1.23 GB (`bytes_per_step`).
Disk holds the same episodes, written as they are added, at `<directory>/episodes/<id:06d>.npz` (format in
`episode.py`). Ids are chronological: a new episode gets id = number of episodes. The collector saves an unfinished
episode at the end of a collection and later replaces it, under the same id, by its longer version.

`state_dict()` is small and made of Python primitives only (Lightning resumes with `torch.load(weights_only=True)`):
it points at the files and records each episode's length. `load_state_dict()` reloads the files *as the checkpoint knew
them*: episodes added after the checkpoint are deleted and episodes that grew since are cut back (a finished one cut
back becomes unfinished again), so a resumed run neither sees the future nor duplicates it.

Versions (the test set): an evaluation replaces the whole test set, which a checkpoint written before it must still
find. `begin_version(name)` therefore starts an empty store in a new folder `<directory>/<name>/` (the folders of
older versions, except the current one, are deleted); `publish()` points the link `<directory>/episodes` at it for
readers. The state records the folder, so a resume reloads the version its checkpoint committed, whatever newer,
possibly unfinished, version a killed evaluation left behind.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import numpy as np

from diamond_pl.data.batch import Batch, Segment
from diamond_pl.atomic import atomic_symlink, remove_temp_files
from diamond_pl.data.episode import Episode, EpisodeFileError

STATE_VERSION = 1
VERSION_NAME = re.compile(r"^(epoch_\d+|final)$")  # folders begin_version may create (and delete)


def is_episode_file(path: Path) -> bool:
    """An episode file's name: `<id>.npz` with a numeric id (temp files and other .npz files are not episodes)."""
    return path.suffix == ".npz" and path.stem.isdigit()


def episode_files(folder: Path) -> dict[int, Path]:
    """The episode files directly in `folder`, by id ({} if there is no such folder)."""
    if not folder.is_dir():
        return {}
    return {int(p.stem): p for p in folder.glob("*.npz") if is_episode_file(p)}


def episodes_folder(store_dir: Path) -> Path:
    """Where a store folder keeps its episode files: `episodes/` (what EpisodeStore writes), else the folder itself
    (a flat folder of `<id>.npz` files, e.g. an imported static dataset)."""
    return store_dir / "episodes" if (store_dir / "episodes").is_dir() else store_dir


def bytes_per_step(frame_shape: tuple[int, ...] = (3, 64, 64)) -> int:
    """RAM per stored step: uint8 frame + int64 action + float32 reward + bool end + bool trunc (12,302 B at 64x64)."""
    return math.prod(frame_shape) + 8 + 4 + 1 + 1


class EpisodeStore:
    def __init__(self, directory: str | os.PathLike, name: str = "dataset", *, subdir: str = "episodes",
                 read_only: bool = False) -> None:
        self.directory = Path(directory)
        self.name = name  # prefix of logged metrics, e.g. "train_dataset"
        self.subdir = subdir
        self.episodes_dir = self.directory / subdir
        self.read_only = read_only  # static datasets: never written, never cleared
        # False on DDP ranks > 0: they mirror rank 0's store in RAM and leave the shared files to rank 0
        self.persist = True
        self.version = 0  # bumped on every change, so samplers know when to recompute their weights
        self._imported_paths: dict[int, Path] = {}  # imported folders may name files 7.npz rather than 000007.npz
        self._reset_ram()

    def _reset_ram(self) -> None:
        self._episodes: list[Episode] = []
        self._lengths: list[int] = []
        self._lengths_arr: np.ndarray | None = None
        self._finished_arr: np.ndarray | None = None
        self._counts_rew = np.zeros(3, dtype=np.int64)
        self._counts_end = np.zeros(2, dtype=np.int64)
        self.version += 1

    # ---------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._episodes)

    @property
    def num_steps(self) -> int:
        return sum(self._lengths)

    @property
    def lengths(self) -> np.ndarray:
        """int64 (num_episodes,), read-only (cached between changes)."""
        if self._lengths_arr is None:
            self._lengths_arr = np.array(self._lengths, dtype=np.int64)
            self._lengths_arr.setflags(write=False)
        return self._lengths_arr

    @property
    def finished(self) -> np.ndarray:
        """bool (num_episodes,): which episodes finished, i.e. have a `final_obs` (cached between changes)."""
        if self._finished_arr is None:
            self._finished_arr = np.array([ep.final_obs is not None for ep in self._episodes], dtype=bool)
            self._finished_arr.setflags(write=False)
        return self._finished_arr

    @property
    def counts_rew(self) -> list[int]:
        """[#r < 0, #r == 0, #r > 0] over all stored steps."""
        return self._counts_rew.tolist()

    @property
    def counts_end(self) -> list[int]:
        """[#end == 0, #end == 1] over all stored steps."""
        return self._counts_end.tolist()

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self._episodes[0].obs.shape[1:] if self._episodes else (3, 64, 64)

    @property
    def nbytes(self) -> int:
        """RAM held by the stored arrays."""
        return sum(ep.nbytes() for ep in self._episodes)

    def path(self, episode_id: int) -> Path:
        return self._imported_paths.get(episode_id) or self.episodes_dir / f"{episode_id:06d}.npz"

    def get(self, episode_id: int) -> Episode:
        """The stored episode itself (its arrays are read-only)."""
        return self._episodes[episode_id]

    def metrics(self) -> dict[str, int]:
        """Dataset totals as logged after each collection (spec §2.7, §12)."""
        p = self.name
        (rn, rz, rp), (e0, e1) = self.counts_rew, self.counts_end
        return {f"{p}/num_episodes": len(self), f"{p}/num_steps": self.num_steps, f"{p}/counts/rew_-1": rn,
                f"{p}/counts/rew__0": rz, f"{p}/counts/rew_+1": rp, f"{p}/counts/end_0": e0, f"{p}/counts/end_1": e1}

    # ---------------------------------------------------------------- changes
    def add_episode(self, episode: Episode, episode_id: int | None = None) -> int:
        """Append `episode` (id None), or replace the unfinished episode `episode_id` by its longer version."""
        self._check_writable()
        n = len(self)
        if episode_id is None or episode_id == n:
            episode_id = n
        elif not 0 <= episode_id < n:
            raise IndexError(f"{self.name}: episode id {episode_id} out of range (store has {n} episodes)")
        else:
            old = self._episodes[episode_id]
            if old.is_finished:
                raise ValueError(f"{self.name}: episode {episode_id} is finished and cannot be replaced")
            if episode.length < old.length:
                raise ValueError(f"{self.name}: replacing episode {episode_id} ({old.length} steps) by a shorter "
                                 f"one ({episode.length} steps); only longer versions may replace it")
        # Disk first: if the write fails, RAM still matches what is on disk.
        if self.persist:
            episode.save(self.path(episode_id))
        self._put(episode_id, episode)
        return episode_id

    def _put(self, episode_id: int, episode: Episode) -> None:
        for a in (episode.obs, episode.act, episode.rew, episode.end, episode.trunc, episode.final_obs):
            if a is not None:
                a.setflags(write=False)  # stored data is immutable; extend/head make copies
        if episode_id < len(self):
            self._count(self._episodes[episode_id], -1)
            self._episodes[episode_id] = episode
            self._lengths[episode_id] = episode.length
        else:
            self._episodes.append(episode)
            self._lengths.append(episode.length)
        self._count(episode, +1)
        self._lengths_arr = self._finished_arr = None
        self.version += 1

    def _count(self, ep: Episode, sign: int) -> None:
        self._counts_rew += sign * np.array([(ep.rew < 0).sum(), (ep.rew == 0).sum(), (ep.rew > 0).sum()])
        self._counts_end += sign * np.array([(~ep.end).sum(), ep.end.sum()])

    def clear(self) -> None:
        """Forget every episode, in RAM and on disk (the test set is emptied before each evaluation)."""
        self._check_writable()
        if self.persist:
            self._delete_files(keep=0)
        self._reset_ram()

    @property
    def _writes_disk(self) -> bool:
        return self.persist and not self.read_only

    def _check_writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"{self.name} ({self.directory}) is a read-only static dataset")

    def _episode_files(self) -> dict[int, Path]:
        return episode_files(self.episodes_dir)

    def _delete_files(self, keep: int) -> None:
        """Remove episode files with id >= keep, and temp files left by interrupted writes."""
        for episode_id, p in self._episode_files().items():
            if episode_id >= keep:
                p.unlink()
        remove_temp_files(self.episodes_dir)

    # ---------------------------------------------------------------- versions (see module docstring)
    def begin_version(self, name: str) -> None:
        """Empty the store into the new folder `<directory>/<name>` (cleared if a killed run left one). The current
        version's folder stays (the last checkpoint may refer to it); older versions' folders are deleted."""
        if not VERSION_NAME.match(name):
            raise ValueError(f"{self.name}: version name {name!r} must match {VERSION_NAME.pattern}")
        self._check_writable()
        if self.persist and self.directory.is_dir():
            for p in self.directory.iterdir():
                if p.is_dir() and not p.is_symlink() and VERSION_NAME.match(p.name) and p.name != self.subdir:
                    shutil.rmtree(p)
        self._use_subdir(name)
        if self.persist and self.episodes_dir.is_dir():  # left by a killed evaluation: never committed
            shutil.rmtree(self.episodes_dir)
        self._reset_ram()

    def publish(self) -> None:
        """Point `<directory>/episodes` at this version's folder (what tools and notebooks read)."""
        link = self.directory / "episodes"
        if not self._writes_disk or self.subdir == "episodes" or (link.is_dir() and not link.is_symlink()):
            return  # not versioned, or an older run's real folder (left as it is)
        self.episodes_dir.mkdir(parents=True, exist_ok=True)
        atomic_symlink(link, self.subdir)

    def _use_subdir(self, subdir: str) -> None:
        self.subdir, self.episodes_dir = subdir, self.directory / subdir

    # ---------------------------------------------------------------- segments
    def gather(self, episode_ids, starts, stops, with_final_obs: bool = False) -> Batch:
        """Batch of windows [start, stop) (equal lengths; may stick out of the episode on either side).

        `with_final_obs`: a finished episode of L steps gets a frame L, its `final_obs`, marked real in
        `mask_padding` (its action, reward and flags stay padding): windows for the denoiser, so that it also learns
        the transition into the final observation (`data.denoiser_final_obs`)."""
        ids = np.asarray(episode_ids, dtype=np.int64)
        starts = np.asarray(starts, dtype=np.int64)
        stops = np.asarray(stops, dtype=np.int64)
        if len(ids) == 0:
            raise ValueError("gather needs at least one window")
        seq_len = int(stops[0] - starts[0])
        if seq_len < 1 or np.any(stops - starts != seq_len):
            raise ValueError("all windows must have the same positive length")
        if ids.min() < 0 or ids.max() >= len(self):
            raise IndexError(f"{self.name}: episode ids must be in [0, {len(self)})")
        lengths = self.lengths[ids]
        frames = lengths + self.finished[ids] if with_final_obs else lengths
        lo, hi = np.maximum(starts, 0), np.minimum(stops, lengths)
        if np.any(hi <= lo):
            raise ValueError("every window must contain at least one real step of its episode")

        batch = Batch.zeros(len(ids), seq_len, self.frame_shape)  # zeros = padding
        obs, act, rew = batch.obs.numpy(), batch.act.numpy(), batch.rew.numpy()
        end, trunc, final_obs, has_final = batch.end.numpy(), batch.trunc.numpy(), batch.final_obs.numpy(), \
            batch.has_final_obs.numpy()
        for i, (e, a, b, s) in enumerate(zip(ids.tolist(), lo.tolist(), hi.tolist(), starts.tolist())):
            ep, o = self._episodes[e], a - s  # o = left padding
            obs[i, o:o + b - a] = ep.obs[a:b]
            act[i, o:o + b - a] = ep.act[a:b]
            rew[i, o:o + b - a] = ep.rew[a:b]
            end[i, o:o + b - a] = ep.end[a:b]
            trunc[i, o:o + b - a] = ep.trunc[a:b]
            if ep.final_obs is not None:
                final_obs[i] = ep.final_obs
                has_final[i] = True
                if with_final_obs and stops[i] > ep.length:  # frame L is in the window
                    obs[i, ep.length - s] = ep.final_obs
        steps = starts[:, None] + np.arange(seq_len)
        batch.mask_padding.numpy()[:] = (steps >= 0) & (steps < frames[:, None])
        batch.segment_ids.numpy()[:] = np.stack([ids, starts, stops], axis=1)
        return batch

    def segment(self, episode_id: int, start: int, stop: int) -> Segment:
        """The window [start, stop) of one episode, zero-padded where it leaves the episode (spec §2.3)."""
        b = self.gather([episode_id], [start], [stop])
        return Segment(obs=b.obs[0].numpy(), act=b.act[0].numpy(), rew=b.rew[0].numpy(), end=b.end[0].numpy(),
                       trunc=b.trunc[0].numpy(), mask_padding=b.mask_padding[0].numpy(),
                       final_obs=b.final_obs[0].numpy(), has_final_obs=bool(b.has_final_obs[0]),
                       episode_id=episode_id, start=start, stop=stop)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "name": self.name, "directory": str(self.directory),
                "subdir": self.subdir, "lengths": [int(x) for x in self._lengths]}

    def load_state_dict(self, state: dict) -> None:
        """Reload from this store's directory, truncated to what `state` recorded (see module docstring)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{self.name}: unsupported store state version {state.get('version')!r}")
        recorded = [int(x) for x in state["lengths"]]
        subdir = state.get("subdir", self.subdir)
        if subdir != self.subdir and not self.read_only:  # the version the checkpoint committed
            if not VERSION_NAME.match(subdir) and subdir != "episodes":
                raise EpisodeFileError(f"{self.name}: the checkpoint names the folder {subdir!r}, not a store version")
            self._use_subdir(subdir)
            self._reset_ram()
        if recorded == self._lengths:  # RAM already holds exactly this state (e.g. a static dataset just imported)
            if self._writes_disk:
                self._delete_files(keep=len(recorded))
                self.publish()
            return
        episodes = []
        for episode_id, length in enumerate(recorded):
            path = self.path(episode_id)
            if not path.is_file():
                raise EpisodeFileError(
                    f"{self.name}: episode file {path} is missing but the checkpoint records episode {episode_id} "
                    f"({length} steps). Point the run at the directory holding the dataset ({state.get('directory')} "
                    f"when the checkpoint was written) or restore the file.")
            ep = Episode.load(path)
            if ep.length < length:
                raise EpisodeFileError(
                    f"{self.name}: episode file {path} has {ep.length} steps but the checkpoint records {length}: "
                    f"the file is older than the checkpoint. Restore the dataset that belongs to this checkpoint.")
            if ep.length > length:  # grown after the checkpoint: forget that future
                ep = ep.head(length)
                if self._writes_disk:
                    ep.save(path)
            episodes.append(ep)
        if self._writes_disk:
            self._delete_files(keep=len(recorded))  # episodes added after the checkpoint
        self._reset_ram()
        for episode_id, ep in enumerate(episodes):
            self._put(episode_id, ep)
        if self._writes_disk:
            self.publish()

    @classmethod
    def import_directory(cls, path: str | os.PathLike, name: str = "dataset", read_only: bool = True) -> EpisodeStore:
        """Load every episode file of a folder (a store directory, or a flat folder of `<id>.npz` files with ids
        0..N-1) as a static dataset (spec §9.5 `static_dataset`)."""
        path = Path(path)
        folder = episodes_folder(path)
        store = cls(path, name, subdir="" if folder == path else folder.name, read_only=read_only)
        files = store._episode_files()
        if not files:
            raise EpisodeFileError(f"no episode files (<id>.npz) found in {store.episodes_dir}")
        missing = sorted(set(range(max(files) + 1)) - set(files))
        if missing:
            raise EpisodeFileError(f"{store.episodes_dir}: episode ids must be 0..{max(files)} without gaps; "
                                   f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        store._imported_paths = files
        for episode_id in range(len(files)):
            store._put(episode_id, Episode.load(files[episode_id]))
        return store
