"""ReplayDataModule: owns the train and test EpisodeStores of a run and hands out samplers and test traversals.

The stores live in `<run_dir>/dataset/train` and `<run_dir>/dataset/test` and are filled by the collection callback
(not by Lightning's data pipeline: they are stateful and checkpointed with the run, spec §18). With `static_dataset`
set, both are instead imported read-only from `<static_dataset>/train` and `<static_dataset>/test`, and sampling is
uniform over steps unless `ignore_sample_weights=False` (spec §9.5).

The checkpointed state is small: per-store episode lengths (the files stay on disk) and the samplers' RNG states.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np

from diamond_pl.data.sampler import DEFAULT_SAMPLE_WEIGHTS, SegmentSampler, check_sample_weights
from diamond_pl.data.store import EpisodeStore
from diamond_pl.data.traversal import Traversal
from diamond_pl.games import validate_game

STATE_VERSION = 1


class ReplayDataModule(L.LightningDataModule):
    def __init__(self, run_dir: str = "runs/default", game: str = "Breakout", batch_size: int = 32,
                 sample_weights: Sequence[float] | None = DEFAULT_SAMPLE_WEIGHTS, static_dataset: str | None = None,
                 ignore_sample_weights: bool = True, seed: int | None = None) -> None:
        """
        Args:
            run_dir: run folder; the datasets go to `<run_dir>/dataset/{train,test}`.
            game: Atari-100k game the data comes from.
            batch_size: windows per batch, for every component (32 in the paper).
            sample_weights: probability mass of each chronological group of train episodes (spec §2.4);
                None = uniform over steps.
            static_dataset: folder with `train/` and `test/` episode folders to train on instead of collecting.
            ignore_sample_weights: with a static dataset, sample uniformly over steps (the reference's default).
            seed: seeds the samplers (each gets its own stream, derived from its name); None = fresh entropy.
        """
        super().__init__()
        self.save_hyperparameters()
        check_sample_weights(sample_weights)  # fail at configuration time, not at the first batch
        self.run_dir = Path(run_dir)
        self.game = validate_game(game)
        self.batch_size = batch_size
        self.sample_weights = None if static_dataset and ignore_sample_weights else sample_weights
        self.static_dataset = static_dataset
        self.seed = seed
        self.train_store = EpisodeStore(self.run_dir / "dataset" / "train", "train_dataset")
        self.test_store = EpisodeStore(self.run_dir / "dataset" / "test", "test_dataset")
        self._samplers: dict[str, SegmentSampler] = {}
        self._pending_sampler_states: dict[str, dict] = {}  # restored before the sampler was created

    @property
    def is_static(self) -> bool:
        return self.static_dataset is not None

    def setup(self, stage: str | None = None) -> None:
        if self.is_static and not self.train_store.read_only:  # import once
            root = Path(self.static_dataset)
            self.train_store = EpisodeStore.import_directory(root / "train", "train_dataset")
            self.test_store = EpisodeStore.import_directory(root / "test", "test_dataset")

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def sampler(self, name: str, seq_len: int, can_sample_beyond_end: bool = False) -> SegmentSampler:
        """The train-set sampler called `name` (e.g. "denoiser"), created on first use and checkpointed."""
        if name not in self._samplers:
            seed = None
            if self.seed is not None:  # independent stream per sampler, stable across runs
                ss = np.random.SeedSequence(self.seed, spawn_key=(zlib.crc32(name.encode()),))
                seed = int(ss.generate_state(1, np.uint64)[0])
            rank, world_size = self._rank_and_world()
            sampler = SegmentSampler(self.train_store, self.batch_size, seq_len, self.sample_weights,
                                     can_sample_beyond_end, seed=seed, rank=rank, world_size=world_size)
            if name in self._pending_sampler_states:
                sampler.load_state_dict(self._pending_sampler_states.pop(name))
            self._samplers[name] = sampler
        sampler = self._samplers[name]
        if (sampler.seq_len, sampler.can_sample_beyond_end) != (seq_len, can_sample_beyond_end):
            raise ValueError(f"sampler {name!r} exists with seq_len={sampler.seq_len}, "
                             f"can_sample_beyond_end={sampler.can_sample_beyond_end}")
        return sampler

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
