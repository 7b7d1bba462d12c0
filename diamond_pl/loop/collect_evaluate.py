"""CollectAndEvaluate: the real-environment side of DIAMOND's training loop (reference spec §9.3, §9.4, §10).

  fit start      initial collection: `initial_steps_min` random-policy steps (the actor's heads are zero, so its
                 policy is uniform), extended by `initial_steps_increment` until the train set holds
                 `threshold_rew` minority-class rewards or `initial_steps_max` steps; this fixes the number of
                 collection epochs = (total_env_steps - initial steps) / steps_per_epoch, and the run lasts that
                 many epochs plus `num_final_epochs`. Then the first epoch's `steps_per_epoch` steps.
  epoch e end    evaluation if e % eval_every == 0 (full test games, epsilon 0, plus world-model test metrics);
                 collection of the next epoch's steps while e + 1 <= collection epochs.
  fit end        final evaluation over `final_eval_episodes` full games (parallel envs), committed by `final.ckpt`.

Resumable from any moment (`loop/resume.py`): `start.ckpt` right after the initial collection, the epoch checkpoints,
and `final.ckpt` after the final evaluation commit everything written before them. Each evaluation writes a new
version of the test set (`EpisodeStore.begin_version`), so the checkpoint before it still finds the version it
recorded. A resume whose checkpoint ends the training but has no final evaluation runs it; a resume of a finished
run does nothing and says so. Stop signals (`loop/interrupt.py`) are honoured before each update.

Collection happens at epoch *end* (Lightning fetches an epoch's first batch before `on_train_epoch_start`), before
the checkpoint callbacks run, so `last.ckpt` holds the data the next epoch trains on. The callback's state — epochs,
collector (env emulator state, in-progress episode, policy LSTM state) and every RNG — goes into the checkpoint, so a
resume continues exactly where the checkpoint was taken.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from diamond_pl.data.collector import Collector, RandomPolicy
from diamond_pl.data.episode import Episode
from diamond_pl.atomic import atomic_write
from diamond_pl.errors import ConfigError
from diamond_pl.loop import interrupt
from diamond_pl.loop.evaluation import imagined_vs_real, side_by_side, world_model_test_metrics
from diamond_pl.loop.progress import announce
from diamond_pl.loop.results import results_path, write_final_results
from diamond_pl.loop.resume import FINAL_NAME, START_NAME, marker_path, write_marker
from diamond_pl.modules.actor_critic import ActorCriticPolicy
from diamond_pl.video import log_gif

STATE_VERSION = 1


def rng_state() -> dict:
    """Global RNG states as weights_only-safe values (tensors, lists, ints)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[int(x) if isinstance(x, (int, np.integer)) else float(x) for x in np_state[2:]]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class CollectAndEvaluate(Callback):
    def __init__(
        self,
        total_env_steps: int = 100_000,
        steps_per_epoch: int = 100,
        initial_steps_min: int = 5_000,
        initial_steps_max: int = 10_000,
        initial_steps_increment: int = 100,
        threshold_rew: int = 10,
        num_final_epochs: int = 50,
        epsilon: float = 0.01,
        noop_max: int = 30,
        eval_every: int = 10,
        eval_episodes: int = 4,
        final_eval_episodes: int = 100,
        num_eval_envs: int = 4,
        seed: int | None = None,
    ) -> None:
        """
        Args:
            total_env_steps: real train-env steps of the whole run (Atari 100k: 100,000 agent steps = 400k frames).
            steps_per_epoch: real steps collected at the start of each collection epoch (paper: 100).
            initial_steps_min / initial_steps_max / initial_steps_increment / threshold_rew: initial random
                collection of 5,000 steps, extended by 100 until 10 minority-class rewards or 10,000 steps.
            num_final_epochs: training epochs after the last collection (paper: 50).
            epsilon: probability of a uniformly random action at each train step (paper: 0.01; test: 0).
            noop_max: random no-op frames at reset are drawn in 1..noop_max (paper: 30).
            eval_every / eval_episodes: evaluation every 10 epochs on 4 full test games.
            final_eval_episodes: full test games of the final evaluation (paper: 100).
            num_eval_envs: test games played in parallel (each env plays a fixed share of the episodes).
            seed: seeds the collectors (env resets, epsilon coins); None = fresh entropy.
        """
        super().__init__()
        if steps_per_epoch < 1 or initial_steps_increment < 1:
            raise ConfigError(f"--loop.steps_per_epoch ({steps_per_epoch}) and --loop.initial_steps_increment "
                              f"({initial_steps_increment}) must be >= 1")
        for name, value in (("num_final_epochs", num_final_epochs), ("eval_every", eval_every),
                            ("eval_episodes", eval_episodes), ("final_eval_episodes", final_eval_episodes),
                            ("noop_max", noop_max), ("threshold_rew", threshold_rew)):
            if value < 0:
                raise ConfigError(f"--loop.{name} must be >= 0, got {value}")
        if num_eval_envs < 1:
            raise ConfigError(f"--loop.num_eval_envs must be >= 1, got {num_eval_envs}")
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"--loop.epsilon must be in [0, 1], got {epsilon}")
        if not 0 < initial_steps_min <= initial_steps_max <= total_env_steps:
            raise ConfigError(
                f"need 0 < initial_steps_min ({initial_steps_min}) <= initial_steps_max ({initial_steps_max}) "
                f"<= total_env_steps ({total_env_steps})"
            )
        for start in range(initial_steps_min, initial_steps_max + 1, initial_steps_increment):
            if (total_env_steps - start) % steps_per_epoch:
                raise ConfigError(
                    f"--loop.total_env_steps {total_env_steps}: the step budget cannot be met exactly: after an initial collection of {start} steps, "
                    f"total_env_steps - {start} = {total_env_steps - start} is not a multiple of steps_per_epoch "
                    f"({steps_per_epoch}); make (total_env_steps - initial_steps_min) and initial_steps_increment "
                    f"multiples of steps_per_epoch"
                )
        self.total_env_steps = total_env_steps
        self.steps_per_epoch = steps_per_epoch
        self.initial_steps_min, self.initial_steps_max = initial_steps_min, initial_steps_max
        self.initial_steps_increment, self.threshold_rew = initial_steps_increment, threshold_rew
        self.num_final_epochs = num_final_epochs
        self.epsilon, self.noop_max = epsilon, noop_max
        self.eval_every, self.eval_episodes = eval_every, eval_episodes
        self.final_eval_episodes, self.num_eval_envs = final_eval_episodes, num_eval_envs
        self.seed = seed
        self.num_epochs_collect: int | None = None  # known after the initial collection
        self.collector: Collector | None = None
        self.eval_rng = np.random.default_rng(None if seed is None else seed + 1)  # test env reset seeds
        self.epochs_done = 0  # epochs whose end (evaluation, collection) is complete
        self.finished = False  # the final evaluation is done (committed by final.ckpt)
        self.final_metrics: dict[str, float] = {}
        self._pending_state: dict | None = None

    # --- set-up -------------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.collector is not None:
            return
        dm = trainer.datamodule
        if trainer.global_rank > 0:  # DDP: rank 0 collects and evaluates; the others mirror its train store
            dm.train_store.persist = dm.test_store.persist = False
            return
        if dm.is_static or pl_module.model_free:
            return
        env = pl_module.env_spec.make(1, train=True, noop_max=self.noop_max)
        self.policy = ActorCriticPolicy(pl_module.actor_critic.net, pl_module.actor_critic.loss_cfg.temperature)
        self.collector = Collector(env, dm.train_store, self.policy, self.epsilon, reset_every_collect=False, seed=self.seed)

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        dm = trainer.datamodule
        resumed = self._pending_state is not None
        if resumed:  # everything was restored from the checkpoint
            self._apply_state(self._pending_state)
            self._pending_state = None
        elif dm.is_static or pl_module.model_free:
            self.num_epochs_collect = 0  # no real-data collection: only the final epochs
        elif trainer.global_rank == 0:
            earlier = list(dm.train_store.episodes_dir.glob("*.npz")) if dm.train_store.episodes_dir.is_dir() else []
            if (len(dm.train_store) > 0 or earlier):  # the CLI checks this first; a safety net for other callers
                raise RuntimeError(
                    f"{dm.train_store.directory} already holds episodes from an earlier run (never overwritten). "
                    f"Resume it with --ckpt_path last, or start a new run with another --data.run_dir."
                )
            if self._checkpoint_dir(trainer) is not None:
                write_marker(dm.run_dir)  # removed once start.ckpt commits the collection
            self._initial_collection(trainer, pl_module)
        if trainer.world_size > 1 and not (dm.is_static or pl_module.model_free) and not resumed:
            self.num_epochs_collect = trainer.strategy.broadcast(self.num_epochs_collect, src=0)
            # the initial collection (and epoch 1's steps) go from rank 0 to every rank
            self._send_data(trainer) if trainer.global_rank == 0 else self._receive_data(trainer)
        trainer.fit_loop.max_epochs = self.num_epochs_collect + self.num_final_epochs
        if not resumed:
            self._save_start_checkpoint(trainer)
        elif self.finished:
            self._say(trainer, f"this run is finished (final evaluation committed in {FINAL_NAME}"
                               f"{self._final_summary()}); nothing to do")
            if not results_path(dm.run_dir).is_file():  # killed between final.ckpt and results.json
                self._write_results(trainer, pl_module)
        elif self.epochs_done >= trainer.fit_loop.max_epochs:  # killed after its last epoch, before final.ckpt
            self._say(trainer, "resuming the final evaluation (all training epochs are done)")
            self._final_evaluation(trainer, pl_module, loaded=trainer._checkpoint_connector._loaded_checkpoint)
        interrupt.check("before the first update" if not resumed else "at the resume")

    # --- commit points (loop/resume.py) ---------------------------------------------------------------------------
    @staticmethod
    def _full_checkpoint_callback(trainer: L.Trainer):
        """The ModelCheckpoint that writes full (not weight-only) checkpoints, None without one."""
        return next((cb for cb in trainer.checkpoint_callbacks
                     if not getattr(cb, "save_weights_only", False) and getattr(cb, "dirpath", None)), None)

    @classmethod
    def _checkpoint_dir(cls, trainer: L.Trainer) -> Path | None:
        cb = cls._full_checkpoint_callback(trainer)
        return None if cb is None else Path(cb.dirpath)

    def _save_start_checkpoint(self, trainer: L.Trainer) -> None:
        """Commit the initial collection before the first update (epoch 1 is 25,000 updates in the paper)."""
        dirpath = self._checkpoint_dir(trainer)
        if dirpath is None:
            return
        trainer.save_checkpoint(dirpath / START_NAME, weights_only=False)  # every rank: a collective call, rank 0 writes
        if trainer.global_rank == 0:
            marker_path(trainer.datamodule.run_dir).unlink(missing_ok=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        # start.ckpt is superseded once an epoch checkpoint exists
        cb = self._full_checkpoint_callback(trainer)
        if trainer.global_rank == 0 and cb is not None and trainer.current_epoch >= 1:
            newer = [p for p in (cb.best_model_path, cb.last_model_path) if p and Path(p).is_file()]
            if newer and Path(newer[0]).name != START_NAME:
                (Path(cb.dirpath) / START_NAME).unlink(missing_ok=True)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.world_size > 1:  # every rank stops at the same update (rank 0 decides)
            interrupt.requested = trainer.strategy.broadcast(interrupt.requested, src=0)
        interrupt.check(f"in epoch {trainer.current_epoch + 1} before update {batch_idx + 1} (this epoch's updates "
                        f"are redone on resume)")

    def _final_evaluation(self, trainer: L.Trainer, pl_module, loaded: dict | None = None) -> None:
        """The final evaluation into the test-set version `final`, committed by final.ckpt. `loaded`: the checkpoint
        this run resumed from (its loop state says the training is over), else a fresh checkpoint is written."""
        if trainer.global_rank == 0 and self.final_eval_episodes > 0:
            self.final_metrics = self.evaluate(trainer, pl_module, self.final_eval_episodes, prefix="final",
                                               model_tests=False, version="final")
        self.finished = True
        dirpath = self._checkpoint_dir(trainer)
        if dirpath is None:
            return
        if loaded is None:
            trainer.save_checkpoint(dirpath / FINAL_NAME, weights_only=False)
        elif trainer.global_rank == 0:  # on_fit_start: Lightning's loops are not restored yet, so reuse the file's
            ckpt = dict(loaded)
            ckpt["callbacks"] = {**ckpt["callbacks"], self.state_key: self.state_dict()}
            dm = trainer.datamodule
            ckpt[type(dm).__qualname__] = dm.state_dict()
            atomic_write(dirpath / FINAL_NAME, lambda f: torch.save(ckpt, f))
        self._write_results(trainer, pl_module)
        if trainer.world_size > 1:
            trainer.strategy.barrier("final_evaluation")

    def _write_results(self, trainer: L.Trainer, pl_module) -> None:
        """<run_dir>/results.json (for sweep/report), derived from what final.ckpt committed: written after it, and
        again by a resume of the finished run if a kill came in between."""
        if trainer.global_rank == 0 and self.final_eval_episodes > 0 and not trainer.datamodule.is_static:
            write_final_results(trainer, pl_module, seed=self.seed, epochs=self.epochs_done)

    def _final_summary(self) -> str:
        m = self.final_metrics
        if "final/return_mean" not in m:
            return ""
        return f": return {m['final/return_mean']:.2f} +- {m.get('final/return_std', 0.0):.2f}, human-normalised " \
               f"{m.get('final/human_normalised_score', float('nan')):.3f}"

    @staticmethod
    def _say(trainer: L.Trainer, message: str) -> None:
        if trainer.global_rank == 0:
            print(message, file=sys.stderr, flush=True)

    def _initial_collection(self, trainer: L.Trainer, pl_module) -> None:
        store = trainer.datamodule.train_store
        self._lengths_before = list(store.lengths)
        announce(trainer, f"initial collection: {self.initial_steps_min:,}+ random-policy env steps")
        random_policy = RandomPolicy(pl_module.num_actions, seed=None if self.seed is None else self.seed + 2)
        self.collector.policy = random_policy  # zero-initialised actor = uniform; a random policy says so plainly
        self.collector.collect(num_steps=self.initial_steps_min)
        while self._minority_rewards(store) < self.threshold_rew and store.num_steps < self.initial_steps_max:
            self.collector.collect(num_steps=self.initial_steps_increment)
        self.collector.policy = self.policy
        self.policy.reset(np.ones(self.collector.num_envs, dtype=bool))
        self.num_epochs_collect = (self.total_env_steps - store.num_steps) // self.steps_per_epoch
        self._log(trainer, {"initial_collection/num_steps": store.num_steps, **store.metrics()})
        if self.num_epochs_collect > 0:
            self._collect(trainer, broadcast=False)  # epoch 1's steps (sent with the initial data)

    @staticmethod
    def _minority_rewards(store) -> int:
        return sum(sorted(store.counts_rew)[:2])  # the two rarest of (r < 0, r = 0, r > 0)

    # --- epochs -------------------------------------------------------------------------------------------------
    def _collect(self, trainer: L.Trainer, broadcast: bool = True) -> None:
        """Rank 0 collects the epoch's real steps; with DDP the new data then goes to every rank."""
        store = trainer.datamodule.train_store
        if trainer.global_rank > 0:
            if broadcast:
                self._receive_data(trainer)
            return
        if broadcast:
            self._lengths_before = list(store.lengths)
        announce(trainer, f"collecting {self.steps_per_epoch} env steps")
        episodes = self.collector.collect(num_steps=self.steps_per_epoch)
        if broadcast:
            self._send_data(trainer)
        metrics = {"env_steps": store.num_steps, **store.metrics()}
        if episodes:
            metrics["train_dataset/return"] = float(np.mean([e["return"] for e in episodes]))
            metrics["train_dataset/length"] = float(np.mean([e["length"] for e in episodes]))
        self._log(trainer, metrics)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1  # 1-based, as the reference counts
        if self.eval_every > 0 and epoch % self.eval_every == 0 and trainer.global_rank == 0:
            self.evaluate(trainer, pl_module, self.eval_episodes, prefix="test", version=f"epoch_{epoch:05d}")
        if not (trainer.datamodule.is_static or pl_module.model_free) and epoch + 1 <= self.num_epochs_collect:
            self._collect(trainer)
        self.epochs_done = epoch  # the checkpoint callbacks run after this hook and record it

    # --- DDP: rank 0's new transitions go to every rank, so all ranks sample from the same store -------------------
    def _send_data(self, trainer: L.Trainer) -> None:
        if trainer.world_size == 1:
            return
        store, before = trainer.datamodule.train_store, self._lengths_before
        payload = []
        for i, length in enumerate(store.lengths):
            old = before[i] if i < len(before) else 0
            if length != old:  # a new episode, or an in-progress one that grew: send only the new steps
                ep = store.get(i)
                arrays = {k: getattr(ep, k)[old:] for k in ("obs", "act", "rew", "end", "trunc")}
                payload.append((i, old, arrays, ep.final_obs))
        trainer.strategy.broadcast(payload, src=0)

    def _receive_data(self, trainer: L.Trainer) -> None:
        store = trainer.datamodule.train_store
        for i, old, arrays, final_obs in trainer.strategy.broadcast(None, src=0):
            tail = Episode(**arrays, final_obs=final_obs)
            store.add_episode(tail if old == 0 else store.get(i).extend(tail), i if i < len(store) else None)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.current_epoch >= trainer.fit_loop.max_epochs and not self.finished:
            interrupt.check("before the final evaluation (it runs on resume)")
            self._final_evaluation(trainer, pl_module)

    # --- evaluation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module, num_episodes: int, prefix: str, model_tests: bool = True,
                 version: str = "final") -> dict:
        """Full test games (no life-loss termination, epsilon 0) into a new version of the test store (see
        `EpisodeStore.begin_version`: the previous one stays until a checkpoint commits this one), then world-model
        tests."""
        dm = trainer.datamodule
        metrics: dict[str, float] = {}
        if not dm.is_static and num_episodes > 0:
            announce(trainer, f"{'final ' if prefix == 'final' else ''}evaluation: {num_episodes} test episode(s)")
            dm.test_store.begin_version(version)
            num_envs = min(self.num_eval_envs, num_episodes)
            env = pl_module.env_spec.make(num_envs, train=False, noop_max=self.noop_max)
            try:
                policy = ActorCriticPolicy(pl_module.actor_critic.net, pl_module.actor_critic.loss_cfg.temperature)
                collector = Collector(env, dm.test_store, policy, 0.0, reset_every_collect=True,
                                      seed=int(self.eval_rng.integers(2**31 - 1)))
                episodes = collector.collect(num_episodes=num_episodes)
            finally:
                env.close()
            dm.test_store.publish()
            returns = np.array([e["return"] for e in episodes], dtype=np.float64)
            metrics.update({
                f"{prefix}/return_mean": float(returns.mean()),
                f"{prefix}/return_std": float(returns.std()),  # population std, as the reference
                f"{prefix}/return_min": float(returns.min()),
                f"{prefix}/return_max": float(returns.max()),
                f"{prefix}/length_mean": float(np.mean([e["length"] for e in episodes])),
            })  # fmt: skip
            hns = pl_module.env_spec.normalised_score(float(returns.mean()))
            if hns is not None:  # Atari only: other envs have no human reference score
                metrics[f"{prefix}/human_normalised_score"] = hns
        if model_tests and not pl_module.model_free and len(dm.test_store) > 0:
            metrics.update({k: float(v) for k, v in world_model_test_metrics(pl_module, dm).items()})
            self._log_dream(trainer, pl_module, dm)
        self._log(trainer, metrics)
        self.last_metrics = metrics  # for the end-of-fit summary line
        return metrics

    def _log_dream(self, trainer: L.Trainer, pl_module, dm) -> None:
        """A GIF of real frames (left) and the world model's open-loop imagination from the same context (right)."""
        n, k = pl_module.denoiser.num_steps_conditioning, pl_module.denoiser.wm_metric_horizon
        for batch in dm.test_traversal(n + k):
            full = batch.mask_padding.all(dim=1)
            if bool(full.any()):
                i = int(full.nonzero()[0])
                obs, act = batch.obs_float()[i].to(pl_module.device), batch.act[i].to(pl_module.device)
                real, imagined = imagined_vs_real(pl_module, obs, act)
                if trainer.logger is not None and trainer.global_rank == 0:
                    log_gif(trainer.logger, "imagination/real_vs_imagined", side_by_side(real, imagined), trainer.global_step)
                return

    def _log(self, trainer: L.Trainer, metrics: dict) -> None:
        if trainer.logger is not None and trainer.global_rank == 0 and metrics:
            trainer.logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=trainer.global_step)

    # --- checkpointing ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "num_epochs_collect": self.num_epochs_collect,
            "collector": None if self.collector is None else self.collector.state_dict(),
            "eval_rng": self.eval_rng.bit_generator.state,
            "rng": rng_state(),
            "epochs_done": self.epochs_done,
            "finished": self.finished,
            "final_metrics": dict(self.final_metrics),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported CollectAndEvaluate state version {state_dict.get('version')!r}")
        self._pending_state = state_dict  # applied in on_fit_start, after the stores were restored

    def _apply_state(self, state: dict) -> None:
        self.num_epochs_collect = state["num_epochs_collect"]
        if self.collector is not None and state["collector"] is not None:
            self.collector.load_state_dict(state["collector"])
        self.eval_rng.bit_generator.state = state["eval_rng"]
        set_rng_state(state["rng"])
        self.epochs_done = int(state.get("epochs_done", 0))  # absent in checkpoints written before final.ckpt existed
        self.finished = bool(state.get("finished", False))
        self.final_metrics = {k: float(v) for k, v in state.get("final_metrics", {}).items()}
