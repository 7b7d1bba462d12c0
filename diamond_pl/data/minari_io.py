"""Minari (Farama's offline-RL dataset format) <-> diamond_pl episode stores.

A Minari episode holds T actions, rewards, terminations and truncations and T + 1 observations (the last one is what
the final action led to). A diamond_pl `Episode` holds the T observations the actions were taken in and, when the
episode finished, the final observation. So:

* import: `obs = observations[:T]`, `final_obs = observations[T]` when the episode terminated or was truncated; an
  episode that stops without either keeps its T steps and no final observation (unfinished, as in our stores).
  Images may be (H, W, C) or (C, H, W), any size: they are resized to `img_size` RGB like a live env's frames.
* export: finished episodes map exactly; an unfinished one (the episode in progress when the run stopped) has no
  observation after its last action, so its last step is left out. Frames are written channels-last (H, W, 3), the
  gymnasium convention, and never JPEG-encoded (lossless).

`minari` (with h5py) is an optional dependency: `pip install -e ".[minari]"`.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from diamond_pl.data.episode import Episode
from diamond_pl.data.store import EpisodeStore
from diamond_pl.envs.resize import resize_frame


class MinariError(ValueError):
    """A dataset diamond_pl cannot use (no images, non-discrete actions, missing); the message says why."""


def _minari():
    try:
        import minari
    except ImportError:
        raise MinariError("Minari is not installed: pip install -e \".[minari]\" (minari with h5py)") from None
    return minari


def _channels_last(frames: np.ndarray) -> np.ndarray:
    """(N, C, H, W) with C in 1, 3, 4 -> (N, H, W, C); (N, H, W) and (N, H, W, C) unchanged."""
    if frames.ndim == 4 and frames.shape[1] in (1, 3, 4) and frames.shape[3] not in (1, 3, 4):
        return frames.transpose(0, 2, 3, 1)
    return frames


def read_dataset(path: str | os.PathLike):
    """A MinariDataset from its folder (the one holding `data/`, or `data/` itself)."""
    minari = _minari()
    path = Path(path).resolve()
    data = path / "data" if (path / "data").is_dir() else path
    if not (data / "metadata.json").is_file():
        raise MinariError(f"{path}: not a Minari dataset folder (no data/metadata.json); give the folder that "
                          f"`minari` created for the dataset, e.g. ~/.minari/datasets/<namespace>/<name>-v0")
    return minari.MinariDataset(data)


def episodes_from_minari(dataset, img_size: int, obs_key: str | None = None):
    """Yield diamond_pl Episodes from a MinariDataset (see the module docstring)."""
    from gymnasium.spaces import Dict, Discrete

    if not isinstance(dataset.action_space, Discrete):
        raise MinariError(f"the dataset's actions are {dataset.action_space}; diamond_pl needs a Discrete action space")
    space = dataset.observation_space
    if isinstance(space, Dict):
        images = [k for k, s in space.spaces.items() if len(getattr(s, "shape", ()) or ()) in (2, 3)]
        key = obs_key or (images[0] if len(images) == 1 else None)
        if key not in space.spaces:
            raise MinariError(f"the dataset's observations are a dict {list(space.spaces)}; name the image with "
                              f"--obs_key (candidates: {images or 'none'})")
        space = space.spaces[key]
    else:
        key = None
    shape = getattr(space, "shape", None) or ()
    if len(shape) not in (2, 3):
        raise MinariError(f"the dataset's observations are {space}, not images; diamond_pl learns from pixels")
    start = int(dataset.action_space.start)
    for ep in dataset.iterate_episodes():
        obs = np.asarray(ep.observations[key] if key else ep.observations)
        frames = np.stack([resize_frame(f, img_size) for f in _channels_last(obs)])
        t = len(ep.actions)
        end, trunc = np.asarray(ep.terminations, bool), np.asarray(ep.truncations, bool)
        finished = bool(end[-1] or trunc[-1]) if t else False
        yield Episode(obs=frames[:t], act=np.asarray(ep.actions, np.int64) - start,
                      rew=np.asarray(ep.rewards, np.float32), end=end, trunc=trunc & ~end,
                      final_obs=frames[t] if finished else None)


def import_minari(path: str | os.PathLike, out: str | os.PathLike, img_size: int = 64, test_episodes: int | None = None,
                  obs_key: str | None = None) -> dict:
    """Write a Minari dataset as a static dataset `out/train`, `out/test` (the last `test_episodes` episodes; default
    10 %, at least 1 when there are 2 or more) for `--data.static_dataset out`."""
    dataset = read_dataset(path)
    out = Path(out)
    if (out / "train").exists() or (out / "test").exists():
        raise MinariError(f"--out {out} already holds a dataset (train/ or test/); choose an empty folder")
    total = dataset.total_episodes
    if total < 1:
        raise MinariError(f"{path}: the dataset holds no episodes")
    n_test = test_episodes if test_episodes is not None else (max(1, total // 10) if total > 1 else 0)
    if not 0 <= n_test < total:
        raise MinariError(f"--test_episodes {n_test}: the dataset has {total} episodes; keep at least one for training")
    stores = {"train": EpisodeStore(out / "train", "train_dataset"), "test": EpisodeStore(out / "test", "test_dataset")}
    (out / "test" / "episodes").mkdir(parents=True, exist_ok=True)  # an empty test set is still a test set
    for i, episode in enumerate(episodes_from_minari(dataset, img_size, obs_key)):
        stores["train" if i < total - n_test else "test"].add_episode(episode)
    return {split: {"episodes": len(s), "steps": s.num_steps} for split, s in stores.items()}


@contextmanager
def _datasets_root(root: Path):
    """Minari writes under $MINARI_DATASETS_PATH: point it at `root` for the duration."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def export_minari(store_dir: str | os.PathLike, out_root: str | os.PathLike, dataset_id: str, num_actions: int,
                  env_id: str | None = None) -> dict:
    """Write the episodes of a store folder (e.g. `<run>/dataset/train`) as the Minari dataset `dataset_id` under
    `out_root` (load it with `MINARI_DATASETS_PATH=out_root`)."""
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    minari = _minari()
    store = EpisodeStore.import_directory(store_dir, "export")
    if len(store) == 0:
        raise MinariError(f"{store_dir}: no episodes to export")
    buffers, dropped = [], 0
    for i in range(len(store)):
        ep = store.get(i)
        if ep.is_finished:
            obs = np.concatenate((ep.obs, ep.final_obs[None]))
            act, rew, end, trunc = ep.act, ep.rew, ep.end, ep.trunc
        else:  # no observation after the last action: leave that step out
            obs, act, rew, end, trunc = ep.obs, ep.act[:-1], ep.rew[:-1], ep.end[:-1], ep.trunc[:-1]
            dropped += 1
        if len(act) == 0:
            continue
        buffers.append(EpisodeBuffer(id=len(buffers), observations=obs.transpose(0, 2, 3, 1), actions=act,
                                     rewards=rew, terminations=end, truncations=trunc))
    c, h, w = store.frame_shape
    out_root = Path(out_root).resolve()  # minari joins relative paths twice
    with _datasets_root(out_root), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="minari")  # metadata nags (author, code link)
        minari.create_dataset_from_buffers(
            dataset_id, buffers, env=None, observation_space=gym.spaces.Box(0, 255, (h, w, c), np.uint8),
            action_space=gym.spaces.Discrete(num_actions), algorithm_name="diamond_pl",
            description=f"replay data of a diamond_pl run{f' on {env_id}' if env_id else ''}", jpeg_encoding=False,
        )
    return {"episodes": len(buffers), "unfinished_last_steps_dropped": dropped,
            "path": str(out_root / dataset_id)}
