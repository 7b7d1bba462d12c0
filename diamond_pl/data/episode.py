"""An episode of real experience, and its pickle-free file format.

An `Episode` is L agent steps of one env (spec §2.1): the observation *before* acting at step t, the action, the raw
reward, and the terminated/truncated flags after acting. A finished episode (done flag on its last step, and only
there) also keeps `final_obs`, the observation after the last step, which is not in `obs` because the env has already
moved on. An unfinished ("in-progress") episode has no done flag and no `final_obs`; the collector saves it at the end
of a collection and later replaces it by a longer version under the same id.

File format (version 1): one uncompressed `.npz` (`numpy.savez`) per episode, read with `allow_pickle=False`.

    key             dtype    shape          meaning
    format_version  int64    ()             1
    obs             uint8    (L, 3, 64, 64) frames in [0, 255], channels first (frame size is not hard-coded)
    act             int64    (L,)           action index
    rew             float32  (L,)           raw reward (never clipped on disk)
    end             bool     (L,)           terminated after acting (train episodes: includes life loss)
    trunc           bool     (L,)           truncated after acting
    final_obs       uint8    (3, 64, 64)    only present if the episode finished (end[-1] or trunc[-1])

Files are written atomically: a hidden temp file in the same directory is written, fsynced, then renamed over the
destination, so a crash leaves either the old file or the new one, never a partial one.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diamond_pl.atomic import atomic_write

FORMAT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"  # every .npz starts with a zip local-file header

# name -> (dtype, number of dimensions); obs fixes L, the other per-step fields must match it.
_STEP_FIELDS = {
    "obs": (np.uint8, 4),
    "act": (np.int64, 1),
    "rew": (np.float32, 1),
    "end": (np.bool_, 1),
    "trunc": (np.bool_, 1),
}


class EpisodeFileError(RuntimeError):
    """An episode file is missing, unreadable or not in the expected format."""


@dataclass(eq=False)  # arrays have no single truth value
class Episode:
    obs: np.ndarray  # uint8 (L, 3, 64, 64)
    act: np.ndarray  # int64 (L,)
    rew: np.ndarray  # float32 (L,)
    end: np.ndarray  # bool (L,)
    trunc: np.ndarray  # bool (L,)
    final_obs: np.ndarray | None = None  # uint8 (3, 64, 64), present iff the episode finished

    def __post_init__(self) -> None:
        # Frames must already be uint8: silently casting floats in [-1, 1] would destroy them.
        self.obs = np.asarray(self.obs)
        if self.obs.dtype != np.uint8 or self.obs.ndim != 4:
            raise TypeError(f"Episode.obs must be uint8 (L, C, H, W), got {self.obs.dtype} {self.obs.shape}")
        self.act = np.asarray(self.act, dtype=np.int64)
        self.rew = np.asarray(self.rew, dtype=np.float32)
        self.end = np.asarray(self.end, dtype=bool)
        self.trunc = np.asarray(self.trunc, dtype=bool)
        length = len(self.obs)
        if length == 0:
            raise ValueError("an Episode needs at least one step")
        for name in ("act", "rew", "end", "trunc"):
            if getattr(self, name).shape != (length,):
                raise ValueError(f"Episode.{name} has shape {getattr(self, name).shape}, expected ({length},)")
        done = self.end | self.trunc
        if done[:-1].any():
            raise ValueError(f"Episode has a done flag before its last step (at t={int(np.argmax(done))})")
        if self.final_obs is not None:
            self.final_obs = np.asarray(self.final_obs)
            if self.final_obs.dtype != np.uint8 or self.final_obs.shape != self.obs.shape[1:]:
                raise TypeError(
                    f"Episode.final_obs must be uint8 {self.obs.shape[1:]}, "
                    f"got {self.final_obs.dtype} {self.final_obs.shape}"
                )
        if bool(done[-1]) != (self.final_obs is not None):
            raise ValueError("Episode.final_obs must be given if and only if the episode finished (end or trunc)")

    @property
    def length(self) -> int:
        return len(self.obs)

    def __len__(self) -> int:
        return self.length

    @property
    def ret(self) -> float:
        """Sum of raw rewards (the game score of this episode)."""
        return float(self.rew.sum(dtype=np.float64))

    @property
    def is_finished(self) -> bool:
        return bool(self.end[-1] or self.trunc[-1])

    def extend(self, other: Episode) -> Episode:
        """This (unfinished) episode followed by `other`, which may or may not finish it."""
        if self.is_finished:
            raise ValueError("cannot extend an episode that already finished")
        return Episode(
            obs=np.concatenate([self.obs, other.obs]),
            act=np.concatenate([self.act, other.act]),
            rew=np.concatenate([self.rew, other.rew]),
            end=np.concatenate([self.end, other.end]),
            trunc=np.concatenate([self.trunc, other.trunc]),
            final_obs=other.final_obs,
        )

    def head(self, length: int) -> Episode:
        """The first `length` steps as a copy; cut short, a finished episode becomes unfinished again."""
        if not 1 <= length <= self.length:
            raise ValueError(f"head({length}) of an episode of length {self.length}")
        if length == self.length:
            return self
        return Episode(
            obs=self.obs[:length].copy(),
            act=self.act[:length].copy(),
            rew=self.rew[:length].copy(),
            end=self.end[:length].copy(),
            trunc=self.trunc[:length].copy(),
        )

    def nbytes(self) -> int:
        arrays = (self.obs, self.act, self.rew, self.end, self.trunc, self.final_obs)
        return sum(a.nbytes for a in arrays if a is not None)

    def save(self, path: str | os.PathLike) -> None:
        """Write this episode to `path` atomically (temp file + fsync + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"format_version": np.int64(FORMAT_VERSION), "obs": self.obs, "act": self.act, "rew": self.rew,
                  "end": self.end, "trunc": self.trunc}
        if self.final_obs is not None:
            arrays["final_obs"] = self.final_obs
        # hidden temp name without the .npz suffix: a leftover temp file is never mistaken for an episode
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Episode:
        path = Path(path)
        fix = ("restore it from a backup, or start from a checkpoint/dataset that does not include it (episode files "
               "are written atomically, so a damaged one points to an interrupted copy or a disk problem)")
        if not path.is_file():
            raise EpisodeFileError(f"Episode file {path} is missing; {fix}.")
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != _ZIP_MAGIC:
            what = "is empty" if not magic else "is not an .npz archive (no zip header)"
            raise EpisodeFileError(f"Episode file {path} {what}; {fix}.")
        try:
            with np.load(path, allow_pickle=False) as npz:
                if not isinstance(npz, np.lib.npyio.NpzFile):
                    raise EpisodeFileError(f"Episode file {path} is not an .npz archive; {fix}.")
                missing = [k for k in ("format_version", *_STEP_FIELDS) if k not in npz.files]
                if missing:
                    raise EpisodeFileError(f"Episode file {path} lacks the field(s) {missing}; {fix}.")
                version = npz["format_version"]
                if version.shape != () or int(version) != FORMAT_VERSION:
                    raise EpisodeFileError(f"Episode file {path} has format version {version.tolist()}, this code "
                                           f"reads version {FORMAT_VERSION}; convert it or use a matching diamond_pl.")
                fields = {k: npz[k] for k in _STEP_FIELDS}
                final_obs = npz["final_obs"] if "final_obs" in npz.files else None
        except EpisodeFileError:
            raise
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
            problem = f"{type(e).__name__}: {e}"
            raise EpisodeFileError(f"Episode file {path} is corrupt or truncated ({problem}); {fix}.") from e
        for name, (dtype, ndim) in _STEP_FIELDS.items():
            a = fields[name]
            if a.dtype != dtype or a.ndim != ndim:
                raise EpisodeFileError(f"Episode file {path}: field {name!r} is {a.dtype} with {a.ndim} dims, expected "
                                       f"{np.dtype(dtype)} with {ndim}; {fix}.")
        try:
            return cls(**fields, final_obs=final_obs)
        except (TypeError, ValueError) as e:
            raise EpisodeFileError(f"Episode file {path} is inconsistent ({e}); {fix}.") from e
