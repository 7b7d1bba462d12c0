"""`python -m diamond_pl fit --config configs/breakout.yaml [--ckpt_path last]`: training through LightningCLI.

The YAML has four sections besides `trainer`: `model` (DiamondAgent: networks, sampler, losses, optimisers),
`data` (ReplayDataModule: run folder, game, batch size, sampling, update counts), `loop` (CollectAndEvaluate: real
env steps, initial collection, evaluation) and `checkpoint` / `snapshot` (ModelCheckpoint: `last.ckpt` every epoch,
weight-only snapshots every 5 epochs). The env settings of `data` (`game` or `env_id`, `img_size`, ...) also set
`model.env`, from which every network takes its action count and frame size.
"""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path

import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ModelSummary, ProgressBar
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from diamond_pl import quiet
from diamond_pl.agent import DiamondAgent
from diamond_pl.data.datamodule import ReplayDataModule, window_lengths
from diamond_pl.envs.spec import EnvSpec
from diamond_pl.loop.collect_evaluate import CollectAndEvaluate
from diamond_pl.loop.progress import ComponentSummary, DiamondProgressBar, fit_summary, startup_warning


class CheckpointError(RuntimeError):
    pass


def check_checkpoint(path: str | Path) -> None:
    """Fail fast, with a clear message, on a missing or unreadable checkpoint (before any env or model work)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, pickled objects, ...
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}). It is truncated or corrupt: point "
            f"--ckpt_path at an intact full checkpoint, or start a new run with another --data.run_dir"
        ) from e
    missing = {"state_dict", "loops", "callbacks"} - set(ckpt)
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a full training checkpoint (no {sorted(missing)}); "
                              f"weight-only snapshots cannot resume a run")


def resolve_window_lengths(cfg: Namespace) -> None:
    """`data.rew_end_seq_len` must be `model.world_model_env.horizon` + n and `data.denoiser_seq_len` more than n
    (n = `model.denoiser.num_steps_conditioning`): null derives them (n + 2, horizon + n), a value that disagrees is
    an error, so changing the horizon or n cannot silently leave the reward/end windows at 19."""
    n, horizon = cfg.model.denoiser.num_steps_conditioning, cfg.model.world_model_env.horizon
    denoiser_len, rew_end_len = window_lengths(n, horizon)
    if cfg.data.rew_end_seq_len is None:
        cfg.data.rew_end_seq_len = rew_end_len
    elif cfg.data.rew_end_seq_len != rew_end_len:
        raise ValueError(
            f"data.rew_end_seq_len ({cfg.data.rew_end_seq_len}) must be model.world_model_env.horizon ({horizon}) + "
            f"model.denoiser.num_steps_conditioning ({n}) = {rew_end_len}: set it to {rew_end_len} or null (derived)"
        )
    if cfg.data.denoiser_seq_len is None:
        cfg.data.denoiser_seq_len = denoiser_len
    elif cfg.data.denoiser_seq_len <= n:
        raise ValueError(
            f"data.denoiser_seq_len ({cfg.data.denoiser_seq_len}) must exceed model.denoiser.num_steps_conditioning "
            f"({n}): n context frames + 1 target + autoregressive steps (paper: {n} + 1 + 1 = {denoiser_len}); "
            f"null derives {denoiser_len}"
        )


SEED_KEY = "seed_everything"  # top-level key of a full checkpoint: the run's seed


class RecordSeed(Callback):
    """Writes the run's seed into every full checkpoint (a resume with `seed_everything: true` reuses it)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[SEED_KEY] = self.seed


ENV_KEYS = ("game", "env_id", "img_size", "frame_skip", "max_pool", "pixels", "make_kwargs")


def env_settings(*values) -> dict:
    """The `data` section's env settings as the agent's `env` (plain values, validated)."""
    d = dict(zip(ENV_KEYS, values))
    return EnvSpec(**{**d, "make_kwargs": dict(d["make_kwargs"] or {})}).to_dict()


class DiamondCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments(tuple(f"data.{k}" for k in ENV_KEYS), "model.env", compute_fn=env_settings)
        parser.link_arguments("model.model_free", "data.model_free")
        parser.add_lightning_class_args(CollectAndEvaluate, "loop")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "snapshot")
        parser.set_defaults({
            # the newest full checkpoint (one file, rewritten every epoch) and last.ckpt as a link to it
            "checkpoint.filename": "epoch_{epoch:05d}",
            "checkpoint.auto_insert_metric_name": False,
            "checkpoint.save_top_k": 1,
            "checkpoint.save_last": "link",
            "checkpoint.every_n_epochs": 1,
            "snapshot.filename": "agent_epoch_{epoch:05d}",
            "snapshot.save_weights_only": True,
            "snapshot.monitor": "epoch",
            "snapshot.mode": "max",
            "snapshot.save_top_k": 11,
            "snapshot.every_n_epochs": 5,
            "snapshot.auto_insert_metric_name": False,
        })  # fmt: skip

    def before_instantiate_classes(self) -> None:
        """Paths left null follow the env: run folder lightning_logs/<env>, checkpoints in <run folder>/checkpoints,
        TensorBoard logs under lightning_logs/<env>/version_0 (so `--data.game Pong` alone starts a separate run)."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        resolve_window_lengths(cfg)
        d = cfg.data
        spec = EnvSpec(game=d.game, env_id=d.env_id, img_size=d.img_size, frame_skip=d.frame_skip,
                       max_pool=d.max_pool, pixels=d.pixels, make_kwargs=dict(d.make_kwargs or {}))
        spec.num_actions  # noqa: B018 -- a gymnasium env is made once here: a bad id fails before any work
        game = spec.slug
        if cfg.data.run_dir is None:
            cfg.data.run_dir = f"lightning_logs/{game}"
        for section in ("checkpoint", "snapshot"):
            if cfg[section].dirpath is None:
                cfg[section].dirpath = str(Path(cfg.data.run_dir) / "checkpoints")
        logger = cfg.trainer.logger
        if isinstance(logger, Namespace) and logger.get("class_path", "").endswith("TensorBoardLogger"):
            if logger.init_args.get("name") is None:
                logger.init_args.name = game
        self.resolve_seed(cfg)

    def _set_seed(self) -> None:
        """Deferred to `before_instantiate_classes` (see `resolve_seed`), where the checkpoint to resume is known.

        Lightning 2.6 turns `seed_everything: true` into `seed_everything(None)`, which seeds 0 on every run ("No seed
        found, seed set to 0") while `data.seed` / `loop.seed` null drew fresh entropy: the saved config said 0 and
        could not repeat the run."""

    def resolve_seed(self, cfg) -> None:
        """One seed per run: drawn (`seed_everything: true`), taken from the checkpoint being resumed, or given.

        It seeds torch/numpy/random before the models are built and, where `data.seed` / `loop.seed` are null, the
        samplers and collectors too; the saved config.yaml and every full checkpoint record it, so `--config
        <saved config.yaml>` or `--seed N` repeats the run. `seed_everything: false` seeds nothing."""
        seed = cfg.get("seed_everything")
        if seed is False:
            return
        source = "given"
        if seed is True or seed is None:
            seed, source = self._checkpoint_seed(cfg), "the checkpoint's"
            if seed is None and os.environ.get("PL_GLOBAL_SEED"):  # a DDP worker: rank 0 drew it
                seed, source = os.environ["PL_GLOBAL_SEED"], "rank 0's"
            if seed is None:
                seed, source = secrets.randbelow(2**31), "drawn at random"
        seed = int(seed)
        seed_everything(seed, workers=True, verbose=False)
        cfg.seed_everything = seed
        self._seed_followers = [s for s in ("data", "loop") if cfg[s].get("seed") is None]
        for section in self._seed_followers:
            cfg[section].seed = seed  # restored to null after instantiation: null keeps meaning "the run's seed"
        self.run_seed = seed
        rank_zero_info(f"Seed {seed} ({source}); config.yaml and the checkpoints record it, --seed {seed} repeats the run")

    def _checkpoint_seed(self, cfg) -> int | None:
        """The seed recorded in the checkpoint a resume starts from (None for a fresh run or an older checkpoint)."""
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path is None or ckpt_path in ("best", "hpc", "registry"):
            return None
        if ckpt_path == "last":
            ckpt_path = Path(cfg.checkpoint.dirpath) / "last.ckpt"
        if not Path(ckpt_path).is_file():
            return None  # before_fit reports it
        seed = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get(SEED_KEY)
        return None if seed is None else int(seed)

    def after_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        for section in getattr(self, "_seed_followers", ()):
            cfg[section].seed = None
        if hasattr(self, "run_seed"):
            self.trainer.callbacks.append(RecordSeed(self.run_seed))

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters here, before any hook: check the file first
        ckpt_path = self.config.get(self.config.get("subcommand") or "fit", {}).get("ckpt_path")
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            check_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def _instantiate_trainer(self, config: dict, callbacks: list):
        """Our progress bar (unless one is configured or bars are off) and a model summary without Lightning's
        FLOPs (always 0 here)."""
        callbacks = list(callbacks)
        given = config.get("callbacks") or []
        configured = [*callbacks, *(given if isinstance(given, list) else [given])]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
            callbacks.append(DiamondProgressBar())
        if config.get("enable_model_summary") is not False and not any(isinstance(c, ModelSummary) for c in configured):
            callbacks.append(ComponentSummary())
        return super()._instantiate_trainer(config, callbacks)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            rank_zero_info(fit_summary(self.trainer, getattr(self, "run_seed", None)))

    def before_fit(self) -> None:
        warning = startup_warning(self.trainer, self.model, self.datamodule)
        if warning is not None:
            rank_zero_info(warning)  # one line, not a Python warning with its source line
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path is None:
            return
        if ckpt_path == "last":
            dirpath = self.trainer.checkpoint_callback.dirpath if self.trainer.checkpoint_callback else None
            last = Path(dirpath) / "last.ckpt" if dirpath else None
            if last is None or not last.is_file():
                raise CheckpointError(
                    f"--ckpt_path last: no last.ckpt in {dirpath} (checkpoint.dirpath). Nothing to resume: start "
                    f"without --ckpt_path, or point --ckpt_path at a checkpoint file"
                )
            ckpt_path = last
        check_checkpoint(ckpt_path)


def seed_alias(argv: list[str]) -> list[str]:
    """`--seed N` is short for `--seed_everything N`."""
    out = []
    for arg in argv:
        if arg == "--seed":
            arg = "--seed_everything"
        elif arg.startswith("--seed="):
            arg = "--seed_everything=" + arg[len("--seed="):]
        out.append(arg)
    return out


def main(argv: list[str]) -> None:
    quiet.install()
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # we pass args on purpose
    DiamondCLI(
        DiamondAgent,
        ReplayDataModule,
        args=["fit", *seed_alias(argv)],
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"reload_dataloaders_every_n_epochs": 1, "num_sanity_val_steps": 0, "max_epochs": -1},
    )
