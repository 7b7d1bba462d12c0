"""`python -m diamond_pl fit --config configs/breakout.yaml [--ckpt_path last]`: training through LightningCLI.

The YAML has four sections besides `trainer`: `model` (DiamondAgent: networks, sampler, losses, optimisers),
`data` (ReplayDataModule: run folder, game, batch size, sampling, update counts), `loop` (CollectAndEvaluate: real
env steps, initial collection, evaluation) and `checkpoint` / `snapshot` (ModelCheckpoint: `last.ckpt` every epoch,
weight-only snapshots every 5 epochs). `data.game` also sets `model.game`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from diamond_pl.agent import DiamondAgent
from diamond_pl.data.datamodule import ReplayDataModule, window_lengths
from diamond_pl.games import validate_game
from diamond_pl.loop.collect_evaluate import CollectAndEvaluate


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


class DiamondCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.game", "model.game")
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
        """Paths left null follow the game: run folder lightning_logs/<game>, checkpoints in <run folder>/checkpoints,
        TensorBoard logs under lightning_logs/<game>/version_0 (so `--data.game Pong` alone starts a separate run)."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        resolve_window_lengths(cfg)
        game = validate_game(cfg.data.game)
        if cfg.data.run_dir is None:
            cfg.data.run_dir = f"lightning_logs/{game.lower()}"
        for section in ("checkpoint", "snapshot"):
            if cfg[section].dirpath is None:
                cfg[section].dirpath = str(Path(cfg.data.run_dir) / "checkpoints")
        logger = cfg.trainer.logger
        if isinstance(logger, Namespace) and logger.get("class_path", "").endswith("TensorBoardLogger"):
            if logger.init_args.get("name") is None:
                logger.init_args.name = game.lower()

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters here, before any hook: check the file first
        ckpt_path = self.config.get(self.config.get("subcommand") or "fit", {}).get("ckpt_path")
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            check_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def before_fit(self) -> None:
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


def main(argv: list[str]) -> None:
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # we pass args on purpose
    DiamondCLI(
        DiamondAgent,
        ReplayDataModule,
        args=["fit", *argv],
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"reload_dataloaders_every_n_epochs": 1, "num_sanity_val_steps": 0, "max_epochs": -1},
    )
