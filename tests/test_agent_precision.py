"""Gradient clipping sees unscaled gradients under 16-bit mixed precision (Lightning issue #18089)."""

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from diamond_pl.agent import DiamondAgent
from diamond_pl.data.datamodule import ReplayDataModule

from test_training_modes import synthetic_dataset

TINY = dict(
    denoiser={"cond_channels": 16, "depths": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "attn_depths": [0, 0, 0, 0]},
    rew_end_model={"lstm_dim": 16, "cond_channels": 8, "depths": [1, 1, 1, 1], "channels": [8, 8, 8, 8]},
    actor_critic={"lstm_dim": 16, "channels": [8, 8, 8, 8]},
)


def first_grad_norms(tmp_path, plugins=None, precision="32-true"):
    data = tmp_path / "static"
    if not data.exists():
        synthetic_dataset(data)
    torch.manual_seed(0)
    agent = DiamondAgent(**TINY)
    dm = ReplayDataModule(run_dir=str(tmp_path / "run"), static_dataset=str(data), batch_size=4, seed=0,
                          updates_first_epoch={"denoiser": 1, "rew_end_model": 1, "actor_critic": 0})
    norms = {}

    class Grab(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            for k, v in trainer.callback_metrics.items():
                if k.endswith("grad_norm_before_clip"):
                    norms[k] = float(v)

    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, precision=None if plugins else precision, plugins=plugins,
                        callbacks=[Grab()], num_sanity_val_steps=0)
    trainer.fit(agent, dm)
    return norms


def test_clipping_sees_unscaled_gradients_with_a_loss_scaler(tmp_path):
    reference = first_grad_norms(tmp_path)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaled = first_grad_norms(tmp_path, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert reference.keys() == scaled.keys() == {"denoiser/train/grad_norm_before_clip", "rew_end_model/train/grad_norm_before_clip"}
    for k in reference:
        # fp16 autocast changes the last digits; a missing unscale would be 65536 times larger
        assert scaled[k] == pytest.approx(reference[k], rel=0.2), k
