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
import sys
import warnings
from pathlib import Path

import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ModelSummary, ProgressBar
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from diamond_pl import quiet
from diamond_pl.agent import DiamondAgent
from diamond_pl.data.datamodule import ReplayDataModule, window_lengths
from diamond_pl.envs.spec import EnvSpec
from diamond_pl.errors import ConfigError, UsageError
from diamond_pl.loop import interrupt
from diamond_pl.loop.collect_evaluate import CollectAndEvaluate
from diamond_pl.loop.progress import ComponentSummary, DiamondProgressBar, fit_summary, startup_warning
from diamond_pl.loop.resume import (
    AtomicCheckpointIO,
    clean_run_folder,
    discard_uncommitted_run,
    marker_path,
    newest_checkpoint,
    repair_last_link,
)
from diamond_pl.tools.checkpoints import CheckpointError, read_torch_file


def _is_rank_zero() -> bool:
    """Before the Trainer exists: DDP ranks > 0 are processes started with these variables set."""
    return all(int(os.environ.get(v, "0") or 0) == 0 for v in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def _say(message: str) -> None:
    if _is_rank_zero():
        print(message, file=sys.stderr, flush=True)


def check_checkpoint(path: str | Path, option: str = "--ckpt_path") -> dict:
    """Fail fast, with a clear message, on a missing, unreadable or weight-only checkpoint (before any work)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{option} {path}: no such file; point it at a full checkpoint (<run>/checkpoints/"
                              f"*.ckpt) or use --ckpt_path last")
    try:
        ckpt = read_torch_file(path)  # the tools' messages: pickled objects, truncated or corrupt files
    except CheckpointError as e:
        raise CheckpointError(f"{option} {e}") from None
    missing = {"state_dict", "loops", "callbacks"} - set(ckpt) if isinstance(ckpt, dict) else {"state_dict"}
    if missing:
        raise CheckpointError(f"{option} {path}: not a full training checkpoint (no {sorted(missing)}); weight-only "
                              f"snapshots and imported agents cannot resume a run (point it at <run>/checkpoints/"
                              f"last.ckpt)")
    return ckpt


def check_checkpoint_env(ckpt: dict, path: str | Path, spec: EnvSpec) -> None:
    """A run resumes with the env (hence action count) it was trained on."""
    hp = ckpt.get("datamodule_hyper_parameters") or {}
    if not hp or "game" not in hp and "env_id" not in hp:
        return
    theirs = EnvSpec(game=hp.get("game"), env_id=hp.get("env_id")) if hp.get("env_id") or hp.get("game") else None
    if theirs is None or theirs.name == spec.name:
        return
    option = "--data.env_id" if theirs.env_id else "--data.game"
    actions = f" ({theirs.num_actions} actions)" if theirs.is_atari else ""
    raise CheckpointError(
        f"--data.{'env_id' if spec.env_id else 'game'} {spec.name} ({spec.num_actions} actions) does not match "
        f"checkpoint {path}, a {theirs.name} run{actions}: resume with {option} {theirs.name} (the run's config), or "
        f"start a new {spec.name} run with another --data.run_dir"
    )


ENV_FOLLOWERS = ("num_actions", "img_size")  # set from the env by the agent (and checked by check_checkpoint_env)


def check_checkpoint_networks(ckpt: dict, path: str | Path, model_cfg) -> None:
    """A run resumes with the network sizes it was trained with: name the first setting that differs (instead of
    torch's size-mismatch error after the models were built)."""
    from diamond_pl.modules.component import COMPONENTS

    def plain(v):
        v = v.as_dict() if hasattr(v, "as_dict") else v
        v = vars(v) if hasattr(v, "__dataclass_fields__") else v
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    saved = ckpt.get("hyper_parameters") or {}
    for section in COMPONENTS:
        given, theirs = plain(model_cfg.get(section) or {}), saved.get(section) or {}
        for key, value in (given.items() if isinstance(given, dict) else []):
            if key in ENV_FOLLOWERS or value is None or key not in theirs or plain(theirs[key]) == value:
                continue
            raise CheckpointError(
                f"--model.{section}.{key} {value} does not match checkpoint {path}, trained with {plain(theirs[key])}: "
                f"resume with the run's config (its version_*/config.yaml), or start a new run with another "
                f"--data.run_dir"
            )


def check_devices(trainer) -> None:
    """Several devices need DDP that tolerates unused parameters (each update trains one of the three networks)."""
    from lightning.pytorch.strategies import DDPStrategy

    n = trainer.num_devices * trainer.num_nodes
    if n <= 1:
        return
    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy) and strategy._ddp_kwargs.get("find_unused_parameters"):
        return
    raise ConfigError(
        f"--trainer.devices {trainer.num_devices}{f' x {trainer.num_nodes} nodes' if trainer.num_nodes > 1 else ''} "
        f"with strategy {type(strategy).__name__}: {n} processes need --trainer.strategy "
        f"ddp_find_unused_parameters_true (each update trains one of the three networks, so the others' parameters "
        f"are unused), or use --trainer.devices 1"
    )


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
        # snapshots first: Lightning runs the two in this order, so the full checkpoint records the snapshot just
        # written (a kill between the two then redoes the snapshot instead of forgetting it)
        parser.add_lightning_class_args(ModelCheckpoint, "snapshot")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            # the newest full checkpoint (one file, rewritten every epoch) and last.ckpt as a link to it
            "checkpoint.filename": "epoch_{epoch:05d}",
            "checkpoint.auto_insert_metric_name": False,
            "checkpoint.save_top_k": 1,
            "checkpoint.save_last": "link",
            "checkpoint.every_n_epochs": 1,
            "checkpoint.enable_version_counter": False,  # a redone epoch overwrites its file instead of adding -v1
            "snapshot.enable_version_counter": False,
            "snapshot.filename": "agent_epoch_{epoch:05d}",
            "snapshot.save_weights_only": True,
            "snapshot.monitor": "epoch",
            "snapshot.mode": "max",
            "snapshot.save_top_k": 11,
            "snapshot.every_n_epochs": 5,
            "snapshot.auto_insert_metric_name": False,
        })  # fmt: skip

    @staticmethod
    def _fill_paths(cfg) -> EnvSpec:
        """Paths left null follow the env: run folder lightning_logs/<env>, checkpoints in <run folder>/checkpoints,
        TensorBoard logs under lightning_logs/<env>/version_0 (so `--data.game Pong` alone starts a separate run)."""
        d = cfg.data
        try:
            spec = EnvSpec(game=d.game, env_id=d.env_id, img_size=d.img_size, frame_skip=d.frame_skip,
                           max_pool=d.max_pool, pixels=d.pixels, make_kwargs=dict(d.make_kwargs or {}))
        except ValueError as e:  # unknown game, frame size out of range, ...: one line
            raise ConfigError(str(e)) from None
        spec.num_actions  # noqa: B018 -- a gymnasium env is made once here: a bad id fails before any work
        if cfg.data.run_dir is None:
            cfg.data.run_dir = f"lightning_logs/{spec.slug}"
        for section in ("checkpoint", "snapshot"):
            if cfg[section].dirpath is None:
                cfg[section].dirpath = str(Path(cfg.data.run_dir) / "checkpoints")
        return spec

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        try:
            resolve_window_lengths(cfg)
        except ValueError as e:  # window lengths that disagree with the horizon: one line
            raise ConfigError(str(e)) from None
        game = self._fill_paths(cfg).slug
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
        ckpt_path = cfg.get("ckpt_path")  # "last" is already the newest complete checkpoint (_parse_ckpt_path)
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
        # runs after parsing, before any class is built (LightningCLI reads the checkpoint's hyperparameters here):
        # decide what to resume, or refuse, before any work
        subcommand = self.config.get("subcommand") or "fit"
        cfg = self.config.get(subcommand)
        if cfg is None:
            return super()._parse_ckpt_path()
        spec = self._fill_paths(cfg)
        named = cfg.get("ckpt_path") not in (None, "last", "hpc")
        ckpt_path = self._resolve_resume(cfg)
        if ckpt_path is not None:
            ckpt = check_checkpoint(ckpt_path)
            check_checkpoint_env(ckpt, ckpt_path, spec)
            if not named:  # a named file's hyperparameters replace the config's (below); `last` keeps the config
                check_checkpoint_networks(ckpt, ckpt_path, cfg.model)
        # Lightning applies a named file's model hyperparameters (not those behind `last`, as before): call it first
        super()._parse_ckpt_path()
        self.config[subcommand].ckpt_path = ckpt_path

    def _resolve_resume(self, cfg) -> str | None:
        """The checkpoint to resume from (`last` = the newest complete one), or None for a new run. A run folder that
        already holds a run is refused without --ckpt_path; one killed before its first checkpoint starts over."""
        ckpt_path, run_dir, ckpt_dir = cfg.get("ckpt_path"), Path(cfg.data.run_dir), Path(cfg.checkpoint.dirpath)
        if _is_rank_zero():  # the other DDP ranks start while rank 0 waits for them: nothing is being written
            clean_run_folder(run_dir, [ckpt_dir, cfg.snapshot.dirpath])  # temp files of killed writes
        if ckpt_path is not None and ckpt_path not in ("last", "hpc"):
            return str(ckpt_path)
        requeued = ckpt_path is None and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
        newest = newest_checkpoint(ckpt_dir)
        if newest is not None and (ckpt_path is not None or requeued):
            repair_last_link(ckpt_dir, newest)
            _say(f"resuming from {newest.path} (epoch {newest.epoch}, step {newest.global_step}"
                 f"{', finished' if newest.finished else ''})")
            return str(newest.path)
        episodes = any((run_dir / "dataset" / "train").rglob("*.npz")) if not cfg.data.static_dataset else False
        if marker_path(run_dir).is_file() and newest is None:
            n = discard_uncommitted_run(run_dir) if _is_rank_zero() else 0
            _say(f"{run_dir}: the run there was stopped before its first checkpoint; its {n} uncommitted episodes "
                 f"are discarded and it starts over")
            return None
        if ckpt_path is not None:
            where = f"; {run_dir}/dataset holds episodes of another run: use another --data.run_dir" if episodes else ""
            raise UsageError(f"--ckpt_path {ckpt_path}: no last.ckpt (nor any full checkpoint) in {ckpt_dir} "
                             f"(checkpoint.dirpath), so nothing to resume: start without --ckpt_path{where}")
        if newest is not None:
            raise UsageError(f"{run_dir} already holds a run (checkpoint {newest.path}); resume it with --ckpt_path "
                             f"last, or start a new run with another --data.run_dir")
        if episodes:
            raise UsageError(f"{run_dir}/dataset/train already holds episodes but {ckpt_dir} no checkpoint, so they "
                             f"cannot be resumed or overwritten: start a new run with another --data.run_dir "
                             f"(or delete {run_dir}/dataset)")
        return None

    def instantiate_classes(self) -> None:
        # constructors validate their arguments (ValueError / TypeError): a configuration error, one line
        try:
            super().instantiate_classes()
        except UsageError:
            raise
        except (ValueError, TypeError) as e:
            raise ConfigError(f"invalid configuration: {e}") from e

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
        check_devices(self.trainer)  # before any env step or update (the checkpoint was checked when parsing)
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # a user's own CheckpointIO plugin is kept
            strategy.checkpoint_io = AtomicCheckpointIO.make()
        warning = startup_warning(self.trainer, self.model, self.datamodule)
        if warning is not None:
            rank_zero_info(warning)  # one line, not a Python warning with its source line


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


def _resume_hint(argv: list[str]) -> str:
    args = [a for i, a in enumerate(argv) if not a.startswith("--ckpt_path") and
            not (i > 0 and argv[i - 1] == "--ckpt_path")]
    return "python -m diamond_pl fit " + " ".join(args + ["--ckpt_path", "last"])


def main(argv: list[str]) -> None:
    quiet.install()
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # we pass args on purpose
    interrupt.install()
    try:
        DiamondCLI(
            DiamondAgent,
            ReplayDataModule,
            args=["fit", *seed_alias(argv)],
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"reload_dataloaders_every_n_epochs": 1, "num_sanity_val_steps": 0, "max_epochs": -1},
        )
    except (interrupt.Interrupted, SIGTERMException) as e:  # Lightning raises the latter itself after SIGTERM
        import signal

        signum = getattr(e, "signum", None) or interrupt.requested or signal.SIGTERM
        where = getattr(e, "where", "during training")
        requeued = interrupt.requeue_on_slurm(signum)
        _say(f"fit: {signal.Signals(signum).name}: stopped {where}. Everything up to the last checkpoint is kept; "
             + ("the job is requeued and resumes by itself" if requeued else f"resume with: {_resume_hint(argv)}"))
        raise SystemExit(128 + signum) from None
    finally:
        interrupt.uninstall()
