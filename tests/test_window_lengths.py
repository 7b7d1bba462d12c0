"""The reward/end and denoiser window lengths follow the model (spec §2.5): reward/end windows are the imagination
horizon + n frames, denoiser windows n + 1 + 1. Changing `model.world_model_env.horizon` (or n) must not leave the
reward/end windows at 19: null derives them, a value that disagrees is an error before any work starts."""

import warnings
from pathlib import Path

import pytest

from diamond_pl.agent import DiamondAgent
from diamond_pl.data.datamodule import ReplayDataModule, window_lengths
from diamond_pl.train import DiamondCLI

ROOT = Path(__file__).resolve().parents[1]


def cli(tmp_path, *args):
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    return DiamondCLI(
        DiamondAgent, ReplayDataModule, run=False, auto_configure_optimizers=False,
        args=["--config", str(ROOT / "configs" / "smoke.yaml"), f"--data.run_dir={tmp_path}",
              f"--trainer.logger.init_args.save_dir={tmp_path}/logs", *args],
        trainer_defaults={"reload_dataloaders_every_n_epochs": 1, "num_sanity_val_steps": 0, "max_epochs": -1},
    )  # fmt: skip


def test_window_lengths_of_the_spec():
    assert window_lengths() == (6, 19)  # 4 + 1 + 1, 15 + 4
    assert window_lengths(num_steps_conditioning=3, horizon=10) == (5, 13)
    dm = ReplayDataModule(run_dir="unused")
    assert (dm.denoiser_seq_len, dm.rew_end_seq_len) == (6, 19)


@pytest.mark.parametrize("horizon, n", [(15, 4), (5, 4), (10, 2)])  # smoke cond_channels 16: n divides it
def test_null_window_lengths_are_derived_from_horizon_and_n(tmp_path, horizon, n):
    c = cli(tmp_path, f"--model.world_model_env.horizon={horizon}", f"--model.denoiser.num_steps_conditioning={n}")
    assert c.datamodule.rew_end_seq_len == horizon + n
    assert c.datamodule.denoiser_seq_len == n + 2


def test_explicit_window_lengths_that_agree_are_kept(tmp_path):
    c = cli(tmp_path, "--model.world_model_env.horizon=10", "--data.rew_end_seq_len=14", "--data.denoiser_seq_len=7")
    assert (c.datamodule.rew_end_seq_len, c.datamodule.denoiser_seq_len) == (14, 7)  # 7: two autoregressive steps


@pytest.mark.parametrize("args, message", [
    (["--model.world_model_env.horizon=10", "--data.rew_end_seq_len=19"], r"rew_end_seq_len \(19\) must be .* = 14"),
    (["--data.denoiser_seq_len=4"], r"denoiser_seq_len \(4\) must exceed"),
])  # fmt: skip
def test_window_lengths_that_disagree_are_an_error(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        cli(tmp_path, *args)
