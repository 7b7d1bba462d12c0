"""The shipped configs: breakout.yaml spells out the paper values the code defaults to, and the diffusion section
(sigma_data, offset noise, training noise levels) reaches the denoiser and survives a checkpoint."""

from pathlib import Path

import pytest
import torch
import yaml

from diamond_pl.agent import DiamondAgent
from diamond_pl.diffusion.edm import DiffusionConfig, c_skip, effective_sigma
from diamond_pl.tools.checkpoints import load_agent, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = {"denoiser": {"cond_channels": 8, "depths": [1, 1], "channels": [4, 4], "attn_depths": [0, 0]},
        "rew_end_model": {"lstm_dim": 8, "cond_channels": 4, "depths": [1], "channels": [4], "attn_depths": [0]},
        "actor_critic": {"lstm_dim": 8, "channels": [4, 4, 4, 4]}}  # fmt: skip


def test_breakout_config_is_the_paper_setting():
    model = yaml.safe_load((ROOT / "configs" / "breakout.yaml").read_text())["model"]
    from_config, defaults = dict(DiamondAgent(**model).hparams), dict(DiamondAgent().hparams)
    # the one deliberate difference: the config asks for TF32 on GPU as the reference trains; the code leaves torch's
    defaults["fast"] = {**defaults["fast"], "matmul_precision": "high"}
    assert from_config == defaults
    assert model["diffusion"] == {"sigma_data": 0.5, "sigma_offset_noise": 0.3, "train_sigma_loc": -0.4,
                                  "train_sigma_scale": 1.2, "train_sigma_min": 0.002, "train_sigma_max": 20.0}


def test_diffusion_config_reaches_the_denoiser_and_the_checkpoint(tmp_path):
    diffusion = {"sigma_data": 0.7, "sigma_offset_noise": 0.1, "train_sigma_loc": -1.2, "train_sigma_scale": 1.0,
                 "train_sigma_min": 0.01, "train_sigma_max": 5.0}
    agent = DiamondAgent(**TINY, diffusion=diffusion)
    d = agent.denoiser.denoiser
    assert (d.sigma_data, d.sigma_offset_noise, d.train_sigma_loc, d.train_sigma_scale, d.train_sigma_min,
            d.train_sigma_max) == (
        0.7, 0.1, -1.2, 1.0, 0.01, 5.0)
    sigma = torch.tensor([0.3])
    assert torch.allclose(d.conditioners(sigma).c_skip, c_skip(effective_sigma(sigma, 0.1), 0.7))

    save_checkpoint(agent, tmp_path / "a.ckpt", {})
    assert load_agent(tmp_path / "a.ckpt").denoiser.diffusion_cfg == DiffusionConfig(**diffusion)


@pytest.mark.parametrize("bad, message", [
    ({"sigma_data": 0.0}, "sigma_data must be > 0"),
    ({"train_sigma_min": 1.0, "train_sigma_max": 0.5}, "train_sigma_min <= train_sigma_max"),
    ({"sigma": 0.5}, "unknown DiffusionConfig fields"),
])  # fmt: skip
def test_bad_diffusion_config_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        DiamondAgent(**TINY, diffusion=bad)
