"""`python -m diamond_pl fit --config configs/breakout.yaml [--ckpt_path last]`: training through LightningCLI.

The YAML has four sections besides `trainer`: `model` (DiamondAgent: networks, sampler, losses, optimisers),
`data` (ReplayDataModule: run folder, game, batch size, sampling, update counts), `loop` (CollectAndEvaluate: real
env steps, initial collection, evaluation) and `checkpoint` / `snapshot` (ModelCheckpoint: `last.ckpt` every epoch,
weight-only snapshots every 5 epochs). `data.game` also sets `model.game`.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from diamond_pl.agent import DiamondAgent
from diamond_pl.data.datamodule import ReplayDataModule
from diamond_pl.errors import ConfigError, UsageError
from diamond_pl.games import NUM_ACTIONS, validate_game
from diamond_pl.loop import interrupt
from diamond_pl.loop.collect_evaluate import CollectAndEvaluate
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


def check_checkpoint_game(ckpt: dict, path: str | Path, game: str) -> None:
    """A run resumes with the game (hence action count) it was trained on."""
    ckpt_game = (ckpt.get("datamodule_hyper_parameters") or {}).get("game") or \
        (ckpt.get("hyper_parameters") or {}).get("game")
    if ckpt_game is None or ckpt_game == game:
        return
    raise CheckpointError(
        f"--data.game {game} ({NUM_ACTIONS.get(game, '?')} actions) does not match checkpoint {path}, a {ckpt_game} "
        f"run ({NUM_ACTIONS.get(ckpt_game, '?')} actions): resume with --data.game {ckpt_game} (the run's config), "
        f"or start a new {game} run with another --data.run_dir"
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
        f"with strategy {type(strategy).__name__}: {n} processes need --trainer.strategy ddp_find_unused_parameters_true (each "
        f"update trains one of the three networks, so the others' parameters are unused), or use --trainer.devices 1"
    )


class DiamondCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.game", "model.game")
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

    def _fill_paths(self, cfg) -> str:
        """Paths left null follow the game: run folder lightning_logs/<game>, checkpoints in <run folder>/checkpoints,
        TensorBoard logs under lightning_logs/<game>/version_0 (so `--data.game Pong` alone starts a separate run)."""
        game = validate_game(cfg.data.game)
        if cfg.data.run_dir is None:
            cfg.data.run_dir = f"lightning_logs/{game.lower()}"
        for section in ("checkpoint", "snapshot"):
            if cfg[section].dirpath is None:
                cfg[section].dirpath = str(Path(cfg.data.run_dir) / "checkpoints")
        return game

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        game = self._fill_paths(cfg)
        logger = cfg.trainer.logger
        if isinstance(logger, Namespace) and logger.get("class_path", "").endswith("TensorBoardLogger"):
            if logger.init_args.get("name") is None:
                logger.init_args.name = game.lower()

    def _parse_ckpt_path(self) -> None:
        # runs after parsing, before any class is built: decide what to resume (or refuse) before any work
        subcommand = self.config.get("subcommand") or "fit"
        cfg = self.config.get(subcommand)
        if cfg is None:
            return super()._parse_ckpt_path()
        game = self._fill_paths(cfg)
        ckpt_path = self._resolve_resume(cfg)
        cfg.ckpt_path = ckpt_path
        if ckpt_path is not None:
            check_checkpoint_game(check_checkpoint(ckpt_path), ckpt_path, game)
        super()._parse_ckpt_path()

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

    def before_fit(self) -> None:
        check_devices(self.trainer)
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # a user's own CheckpointIO plugin is kept
            strategy.checkpoint_io = AtomicCheckpointIO.make()


def _resume_hint(argv: list[str]) -> str:
    args = [a for i, a in enumerate(argv) if not a.startswith("--ckpt_path") and
            not (i > 0 and argv[i - 1] == "--ckpt_path")]
    return "python -m diamond_pl fit " + " ".join(args + ["--ckpt_path", "last"])


def main(argv: list[str]) -> None:
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # we pass args on purpose
    interrupt.install()
    try:
        DiamondCLI(
            DiamondAgent,
            ReplayDataModule,
            args=["fit", *argv],
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
