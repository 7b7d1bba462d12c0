"""ReplayDataModule: owns the train and test EpisodeStores of a run and hands out samplers and test traversals.

The stores live in `<run_dir>/dataset/train` and `<run_dir>/dataset/test` and are filled by the collection callback
(not by Lightning's data pipeline: they are stateful and checkpointed with the run, spec §18). With `static_dataset`
set, both are instead imported read-only from `<static_dataset>/train` and `<static_dataset>/test`, and sampling is
uniform over steps unless `ignore_sample_weights=False` (spec §9.5).

The checkpointed state is small: per-store episode lengths (the files stay on disk) and the samplers' RNG states.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np

from diamond_pl.config_dicts import from_dict
from diamond_pl.data.sampler import DEFAULT_SAMPLE_WEIGHTS, SegmentSampler, check_sample_weights
from diamond_pl.data.schedule import UpdateCounts, UpdateSchedule
from diamond_pl.data.store import EpisodeStore, episode_files, episodes_folder
from diamond_pl.errors import ConfigError
from diamond_pl.data.traversal import Traversal
from diamond_pl.envs.spec import EnvSpec

STATE_VERSION = 1


def check_static_dataset(root: str) -> None:
    """A static dataset is a folder with `train/` and `test/` episode folders (each `<id>.npz` files, directly or
    under `episodes/`); say which part is missing before anything starts."""
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(f"--data.static_dataset {root}: no such folder (expected a folder with train/ and test/ "
                          f"episode folders)")
    for split in ("train", "test"):
        if not (path / split).is_dir():
            raise ConfigError(f"--data.static_dataset {root}: no {split}/ folder; a static dataset needs "
                              f"{root}/train and {root}/test, each holding <id>.npz episode files")
    for split in ("train", "test"):
        if not episode_files(episodes_folder(path / split)):
            raise ConfigError(f"--data.static_dataset {root}: {split}/ holds no episode files (<id>.npz, directly "
                              f"or under {split}/episodes/)")


def window_lengths(num_steps_conditioning: int = 4, horizon: int = 15, autoregressive_steps: int = 1) -> tuple[int, int]:
    """Frames per (denoiser, reward/end) window (spec §2.5): n + 1 + autoregressive steps, and imagination horizon + n
    (the reward/end model is trained on windows as long as an imagined episode plus its context). Paper: (6, 19)."""
    return num_steps_conditioning + 1 + autoregressive_steps, horizon + num_steps_conditioning


class ReplayDataModule(L.LightningDataModule):
    def __init__(self, run_dir: str | None = None, game: str = "Breakout", env_id: str | None = None,
                 img_size: int = 64, frame_skip: int = 1, max_pool: bool = False, pixels: str = "auto",
                 make_kwargs: dict | None = None, batch_size: int = 32,
                 sample_weights: Sequence[float] | None = DEFAULT_SAMPLE_WEIGHTS, static_dataset: str | None = None,
                 ignore_sample_weights: bool = True, seed: int | None = None,
                 updates_first_epoch: UpdateCounts = UpdateCounts(10_000, 10_000, 5_000),
                 updates_per_epoch: UpdateCounts = UpdateCounts(400, 400, 400),
                 denoiser_seq_len: int | None = None, rew_end_seq_len: int | None = None,
                 denoiser_final_obs: bool = False, model_free: bool = False) -> None:
        """
        Args:
            run_dir: run folder; the datasets go to `<run_dir>/dataset/{train,test}`. None: lightning_logs/<env>.
            game: Atari-100k game the data comes from (when `env_id` is None).
            env_id: any gymnasium env with images and discrete actions instead: a registered id, or
                `my_package.my_module:MyEnv-v0` (imports the module first). The next five apply to it only.
            img_size: side of the square RGB frames of the env, the store and every network (paper: 64).
            frame_skip / max_pool: action repeat, and max over the last two frames (gymnasium envs; 1 / false).
            pixels: frames from the observation (obs), from env.render() (render), or whichever applies (auto).
            make_kwargs: keyword arguments of gymnasium.make (e.g. {max_episode_steps: 100}).
            batch_size: windows per batch, for every component (32 in the paper).
            sample_weights: probability mass of each chronological group of train episodes (spec §2.4);
                None = uniform over steps.
            static_dataset: folder with `train/` and `test/` episode folders to train on instead of collecting.
            ignore_sample_weights: with a static dataset, sample uniformly over steps (the reference's default).
            seed: seeds the samplers (each gets its own stream, derived from its name); None = fresh entropy.
            updates_first_epoch: optimiser steps per component in epoch 1 (paper: 10k / 10k / 5k).
            updates_per_epoch: optimiser steps per component in later epochs (paper: 400 / 400 / 400).
            denoiser_seq_len: frames per denoiser window = n + 1 + autoregressive steps (paper: 4 + 1 + 1 = 6).
                None: `window_lengths()` of the paper's n; `fit` derives it from `model.denoiser` (train.py).
            rew_end_seq_len: frames per reward/end window = imagination horizon + n (paper: 15 + 4 = 19).
                None: as above; `fit` derives it from `model.world_model_env.horizon` and n, and rejects a
                value that disagrees with them.
            denoiser_final_obs: denoiser windows may end on an episode's final observation, so the world model
                learns to imagine what only the end of an episode shows (a goal reached). The reference never trains
                the denoiser on final observations (false); small envs need it (configs/tiny.yaml).
            model_free: only actor-critic updates (set from `model.model_free` by the CLI).
        """
        super().__init__()
        try:
            self.updates_first_epoch = from_dict(UpdateCounts, updates_first_epoch)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--data.updates_first_epoch: {e}") from None
        try:
            self.updates_per_epoch = from_dict(UpdateCounts, updates_per_epoch)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--data.updates_per_epoch: {e}") from None
        default_den, default_rew = window_lengths()
        denoiser_seq_len = default_den if denoiser_seq_len is None else denoiser_seq_len
        rew_end_seq_len = default_rew if rew_end_seq_len is None else rew_end_seq_len
        self.denoiser_seq_len, self.rew_end_seq_len = denoiser_seq_len, rew_end_seq_len
        # plain values only in hparams: checkpoints must load with weights_only=True
        self.save_hyperparameters({
            "run_dir": run_dir, "game": game, "env_id": env_id, "img_size": img_size, "frame_skip": frame_skip,
            "max_pool": max_pool, "pixels": pixels, "make_kwargs": dict(make_kwargs or {}), "batch_size": batch_size,
            "sample_weights": None if sample_weights is None else list(sample_weights),
            "static_dataset": static_dataset, "ignore_sample_weights": ignore_sample_weights, "seed": seed,
            "updates_first_epoch": asdict(self.updates_first_epoch), "updates_per_epoch": asdict(self.updates_per_epoch),
            "denoiser_seq_len": denoiser_seq_len, "rew_end_seq_len": rew_end_seq_len,
            "denoiser_final_obs": denoiser_final_obs, "model_free": model_free,
        })
        self.model_free = model_free
        if not isinstance(denoiser_final_obs, bool):
            raise ConfigError(f"--data.denoiser_final_obs must be true or false, got {denoiser_final_obs!r}")
        self.denoiser_final_obs = denoiser_final_obs
        check_sample_weights(sample_weights)  # fail at configuration time, not at the first batch
        self._check_sizes(batch_size, denoiser_seq_len, rew_end_seq_len)
        if static_dataset is not None:
            check_static_dataset(static_dataset)
        self.env_spec = EnvSpec(game=game, env_id=env_id, img_size=img_size, frame_skip=frame_skip,
                                max_pool=max_pool, pixels=pixels, make_kwargs=dict(make_kwargs or {}))
        self.run_dir = Path(run_dir if run_dir is not None else f"lightning_logs/{self.env_spec.slug}")
        self.game = self.env_spec.name
        self.batch_size = batch_size
        self.sample_weights = None if static_dataset and ignore_sample_weights else sample_weights
        self.static_dataset = static_dataset
        self.seed = seed
        self.train_store = EpisodeStore(self.run_dir / "dataset" / "train", "train_dataset")
        self.test_store = EpisodeStore(self.run_dir / "dataset" / "test", "test_dataset")
        self._samplers: dict[str, SegmentSampler] = {}
        self._pending_sampler_states: dict[str, dict] = {}  # restored before the sampler was created

    def _check_sizes(self, batch_size: int, denoiser_seq_len: int, rew_end_seq_len: int) -> None:
        """Sizes are checked here, before the initial collection, not at the first batch."""
        for name, value in (("batch_size", batch_size), ("denoiser_seq_len", denoiser_seq_len),
                            ("rew_end_seq_len", rew_end_seq_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--data.{name} must be a positive integer, got {value!r}")
        for which, counts in (("updates_first_epoch", self.updates_first_epoch),
                              ("updates_per_epoch", self.updates_per_epoch)):
            for name, value in asdict(counts).items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError(f"--data.{which}.{name} must be an integer >= 0, got {value!r}")

    @property
    def is_static(self) -> bool:
        return self.static_dataset is not None

    def setup(self, stage: str | None = None) -> None:
        if self.is_static and not self.train_store.read_only:  # import once
            root = Path(self.static_dataset)
            self.train_store = EpisodeStore.import_directory(root / "train", "train_dataset")
            self.test_store = EpisodeStore.import_directory(root / "test", "test_dataset")
            self._check_static_dataset()

    def _check_static_dataset(self) -> None:
        """The recorded data must fit the env the networks are built for: frame size and action count."""
        spec, size = self.env_spec, self.env_spec.img_size
        for store in (self.train_store, self.test_store):
            if len(store) and tuple(store.frame_shape) != (3, size, size):
                raise ConfigError(f"--data.static_dataset {self.static_dataset}: {store.name} frames are "
                                 f"{tuple(store.frame_shape)} but data.img_size is {size}; pass --data.img_size "
                                 f"{store.frame_shape[-1]} (or re-import the data at {size})")
            top = max((int(store.get(i).act.max(initial=0)) for i in range(len(store))), default=0)
            if top >= spec.num_actions:
                raise ConfigError(f"--data.static_dataset {self.static_dataset}: {store.name} holds action {top} but "
                                 f"{spec.name} has {spec.num_actions} actions; name the env the data comes from "
                                 f"(--data.env_id / --data.game)")

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def sampler(self, name: str, seq_len: int, can_sample_beyond_end: bool = False,
                with_final_obs: bool = False) -> SegmentSampler:
        """The train-set sampler called `name` (e.g. "denoiser"), created on first use and checkpointed."""
        if name not in self._samplers:
            seed = None
            if self.seed is not None:  # independent stream per sampler, stable across runs
                ss = np.random.SeedSequence(self.seed, spawn_key=(zlib.crc32(name.encode()),))
                seed = int(ss.generate_state(1, np.uint64)[0])
            rank, world_size = self._rank_and_world()
            sampler = SegmentSampler(self.train_store, self.batch_size, seq_len, self.sample_weights,
                                     can_sample_beyond_end, seed=seed, rank=rank, world_size=world_size,
                                     with_final_obs=with_final_obs)
            if name in self._pending_sampler_states:
                sampler.load_state_dict(self._pending_sampler_states.pop(name))
            self._samplers[name] = sampler
        sampler = self._samplers[name]
        if (sampler.seq_len, sampler.can_sample_beyond_end, sampler.with_final_obs) != \
                (seq_len, can_sample_beyond_end, with_final_obs):
            raise ValueError(f"sampler {name!r} exists with seq_len={sampler.seq_len}, "
                             f"can_sample_beyond_end={sampler.can_sample_beyond_end}, "
                             f"with_final_obs={sampler.with_final_obs}")
        return sampler

    def updates(self, epoch: int) -> UpdateCounts:
        """Optimiser steps per component in (0-based) `epoch`."""
        return self.updates_first_epoch if epoch == 0 else self.updates_per_epoch

    def train_dataloader(self) -> UpdateSchedule:
        """This epoch's updates: denoiser windows (left padding only), reward/end windows (padding on both sides),
        then actor-critic markers. Rebuilt every epoch (`reload_dataloaders_every_n_epochs=1`)."""
        epoch = self.trainer.current_epoch if getattr(self, "trainer", None) is not None else 0
        n = self.updates(epoch)
        if self.model_free:  # no world model: the actor-critic learns from real envs (its "batches" are markers)
            return UpdateSchedule([("actor_critic", n.actor_critic, None)])
        den = self.sampler("denoiser", self.denoiser_seq_len, with_final_obs=self.denoiser_final_obs)
        rew = self.sampler("rew_end_model", self.rew_end_seq_len, can_sample_beyond_end=True)
        return UpdateSchedule([
            ("denoiser", n.denoiser, den.sample),
            ("rew_end_model", n.rew_end_model, rew.sample),
            ("actor_critic", n.actor_critic, None),
        ])

    def test_traversal(self, seq_len: int) -> Traversal:
        """All test episodes in consecutive windows of `seq_len` (spec §2.6)."""
        return Traversal(self.test_store, self.batch_size, seq_len)

    def state_dict(self) -> dict:
        states = {name: s.state_dict() for name, s in self._samplers.items()}
        return {"version": STATE_VERSION, "run_dir": str(self.run_dir), "static_dataset": self.static_dataset,
                "train_store": self.train_store.state_dict(), "test_store": self.test_store.state_dict(),
                "samplers": {**self._pending_sampler_states, **states}}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported ReplayDataModule state version {state_dict.get('version')!r}")
        self.setup()  # static datasets must be imported before their state is applied
        self.train_store.load_state_dict(state_dict["train_store"])
        self.test_store.load_state_dict(state_dict["test_store"])
        self._pending_sampler_states = dict(state_dict["samplers"])
        for name in list(self._pending_sampler_states):
            if name in self._samplers:
                self._samplers[name].load_state_dict(self._pending_sampler_states.pop(name))
