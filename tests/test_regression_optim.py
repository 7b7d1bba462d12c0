"""Regression guards for the optimisers (reference spec §9.2), with the spec's numbers written out:

  AdamW (betas 0.9 / 0.999), lr 1e-4, eps 1e-8; weight decay 0.01 / 0.01 / 0 (denoiser / reward-end / actor-critic)
  on the weights of Linear / Conv1d / Conv2d / LSTM / LSTMCell only; warm-up factor min(1, step / 100), so the first
  update runs at lr 0; global-norm clipping before the step at 1 / 100 / 100; one schedule step per optimiser step.

The last test trains a tiny agent through Lightning (static dataset, 4 updates per component) and reads the lr and
the clip threshold each component actually used.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from diamond_pl.agent import DiamondAgent
from diamond_pl.data.datamodule import ReplayDataModule
from diamond_pl.data.episode import Episode
from diamond_pl.data.store import EpisodeStore
from diamond_pl.modules.optim import OptimConfig, configure_adamw, parameter_groups
from diamond_pl.nets.actor_critic_net import ActorCriticNet, ActorCriticNetConfig
from diamond_pl.nets.denoiser_net import DenoiserNet, DenoiserNetConfig
from diamond_pl.nets.rew_end_net import RewEndNet, RewEndNetConfig

LR, EPS, WARMUP = 1e-4, 1e-8, 100
SPEC = {  # component: (weight decay, max grad norm)
    "denoiser": (0.01, 1.0),
    "rew_end_model": (0.01, 100.0),
    "actor_critic": (0.0, 100.0),
}
# four U-Net levels: the middle attention then runs at 8x8, not over all 64x64 positions
TINY = {"denoiser": {"cond_channels": 8, "depths": [1, 1, 1, 1], "channels": [4, 4, 4, 4], "attn_depths": [0, 0, 0, 0]},
        "rew_end_model": {"lstm_dim": 8, "cond_channels": 4, "depths": [1, 1, 1, 1], "channels": [4, 4, 4, 4],
                          "attn_depths": [0, 0, 0, 0]},
        "actor_critic": {"lstm_dim": 8, "channels": [4, 4, 4, 4]}}  # fmt: skip


class Zoo(nn.Module):
    """One module of every kind the grouping rule names, plus kinds it must leave undecayed."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.conv1d = nn.Conv1d(2, 2, 3)
        self.conv2d = nn.Conv2d(2, 2, 3)
        self.lstm = nn.LSTM(4, 4)
        self.cell = nn.LSTMCell(4, 4)
        self.norm = nn.GroupNorm(1, 4)
        self.layer_norm = nn.LayerNorm(4)
        self.embedding = nn.Embedding(5, 4)
        self.register_buffer("fourier", torch.randn(4))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.half_frozen = nn.Linear(2, 2)  # a frozen weight leaves its module's other parameters in the groups
        self.half_frozen.weight.requires_grad_(False)


def test_parameter_groups_decay_only_linear_conv_and_lstm_weights():
    z = Zoo()
    decay, no_decay = parameter_groups(z, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in z.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay["params"])
    assert decayed == sorted(["linear.weight", "conv1d.weight", "conv2d.weight", "lstm.weight_ih_l0",
                              "lstm.weight_hh_l0", "cell.weight_ih", "cell.weight_hh"])  # fmt: skip
    not_decayed = sorted(names[id(p)] for p in no_decay["params"])
    assert not_decayed == sorted(["linear.bias", "conv1d.bias", "conv2d.bias", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
                                  "cell.bias_ih", "cell.bias_hh", "norm.weight", "norm.bias", "layer_norm.weight",
                                  "layer_norm.bias", "embedding.weight", "half_frozen.bias"])  # fmt: skip


@pytest.mark.parametrize("net", ["denoiser", "rew_end_model", "actor_critic"])
def test_every_trainable_parameter_is_in_exactly_one_group(net):
    torch.manual_seed(0)
    model = {
        "denoiser": lambda: DenoiserNet(DenoiserNetConfig(4, cond_channels=8, depths=(1, 1), channels=(4, 4),
                                                          attn_depths=(0, 1))),
        "rew_end_model": lambda: RewEndNet(RewEndNetConfig(4, lstm_dim=8, cond_channels=4, depths=(1,), channels=(4,),
                                                           attn_depths=(0,))),
        "actor_critic": lambda: ActorCriticNet(ActorCriticNetConfig(4, lstm_dim=8, channels=(4, 4, 4, 4))),
    }[net]()  # fmt: skip
    groups = parameter_groups(model, 0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    # the embeddings (actions) are never decayed; the Fourier frequencies are a buffer, in no group
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            assert all(m.weight is not p for p in groups[0]["params"])


@pytest.mark.parametrize("component", list(SPEC))
def test_component_optimisers_are_the_reference_adamw(component):
    agent = DiamondAgent(**TINY)
    module = agent.components[component]
    wd, clip = SPEC[component]
    cfg = module.optim_cfg
    assert (cfg.lr, cfg.eps, cfg.weight_decay, cfg.warmup_steps, cfg.max_grad_norm) == (LR, EPS, wd, WARMUP, clip)
    opt = module.configure_optimizers()["optimizer"]
    assert type(opt) is torch.optim.AdamW
    assert [g["weight_decay"] for g in opt.param_groups] == [wd, 0.0]
    for g in opt.param_groups:
        assert g["betas"] == (0.9, 0.999) and g["eps"] == EPS and g["initial_lr"] == LR
        assert not g["amsgrad"] and not g["maximize"]


def test_warmup_first_update_at_lr_zero_then_linear_to_lr_then_constant():
    model = nn.Linear(3, 1)
    opt, sched = configure_adamw(model, OptimConfig(lr=LR, eps=EPS, weight_decay=0.01, warmup_steps=WARMUP))
    lrs = []
    for step in range(WARMUP + 5):
        lrs.append(opt.param_groups[0]["lr"])
        before = [q.detach().clone() for q in model.parameters()]
        model(torch.ones(2, 3)).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        if step == 0:  # lr 0: neither the Adam step nor the decoupled weight decay moves anything
            assert all(torch.equal(b, q) for b, q in zip(before, model.parameters()))
        elif step == 1:
            assert not all(torch.equal(b, q) for b, q in zip(before, model.parameters()))
    expected = [LR * min(1.0, s / WARMUP) for s in range(WARMUP + 5)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9, atol=0)
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(1e-6) and lrs[WARMUP] == LR == lrs[-1]


def _static_dataset(root, length=30):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        store = EpisodeStore(root / split, split)
        for _ in range(4):
            end = np.zeros(length, bool)
            end[-1] = True
            store.add_episode(Episode(rng.integers(0, 255, (length, 3, 64, 64), dtype=np.uint8),
                                      rng.integers(0, 4, length), rng.choice([0.0, 1.0], length).astype(np.float32),
                                      end, np.zeros(length, bool), rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)))


def test_training_uses_lr_zero_first_warmup_after_and_per_component_clipping(tmp_path, monkeypatch):
    """Four updates per component through Lightning: the lr each update used is 0, 1/100, 2/100, 3/100 of 1e-4, and
    every component's gradients are clipped at its own threshold (1 / 100 / 100) before its optimiser steps."""
    import lightning as L

    _static_dataset(tmp_path / "static")
    updates = {"denoiser": 4, "rew_end_model": 4, "actor_critic": 4}
    dm = ReplayDataModule(run_dir=str(tmp_path / "run"), static_dataset=str(tmp_path / "static"), batch_size=2,
                          seed=0, updates_first_epoch=updates, updates_per_epoch=updates)  # fmt: skip
    torch.manual_seed(0)
    agent = DiamondAgent(**TINY, world_model_env={"num_envs": 2, "horizon": 3, "num_batches_to_preload": 2},
                         actor_critic_loss={"backup_every": 3}, fast={"cpu_threads": None, "host_malloc_tuning": False})  # fmt: skip

    owner = {id(p): c for c, m in agent.components.items() for p in m.parameters()}
    clips, seen = [], []
    original = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        comps = {owner[id(p)] for p in parameters}
        assert len(comps) == 1, comps
        clips.append((comps.pop(), max_norm))
        return original(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            component = batch[0]
            seen.append((component, float(trainer.callback_metrics[f"{component}/train/lr"])))

    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                        reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(agent, datamodule=dm)

    for component, (_, clip) in SPEC.items():
        lrs = [lr for c, lr in seen if c == component]
        assert lrs == pytest.approx([0.0, LR / WARMUP, 2 * LR / WARMUP, 3 * LR / WARMUP], abs=1e-12), component
        assert [m for c, m in clips if c == component] == [clip] * 4, component
        opt = trainer.optimizers[list(SPEC).index(component)]
        assert opt.param_groups[0]["lr"] == pytest.approx(4 * LR / WARMUP)  # the schedule stepped once per update
    assert not math.isnan(seen[0][1])


def test_component_optimiser_factories_are_the_reference_values():
    """The factories themselves (the agent's defaults are computed from them once, at import)."""
    from diamond_pl.modules.actor_critic import actor_critic_optim
    from diamond_pl.modules.denoiser import denoiser_optim
    from diamond_pl.modules.rew_end import rew_end_optim

    for factory, component in ((denoiser_optim, "denoiser"), (rew_end_optim, "rew_end_model"),
                               (actor_critic_optim, "actor_critic")):  # fmt: skip
        wd, clip = SPEC[component]
        assert factory() == OptimConfig(lr=LR, eps=EPS, weight_decay=wd, warmup_steps=WARMUP, max_grad_norm=clip)


def test_no_warmup_is_full_lr_from_the_first_step_and_one_step_warmup_starts_at_zero():
    """warm-up factor min(1, step / W) (spec §9.2) at the small ends of W: W = 1 gives lr 0 then lr; W = 0 means no
    warm-up (the formula's limit), lr from the first step."""
    for warmup, expected in ((0, [LR, LR, LR]), (1, [0.0, LR, LR]), (2, [0.0, LR / 2, LR])):
        model = nn.Linear(3, 1)
        opt, sched = configure_adamw(model, OptimConfig(lr=LR, warmup_steps=warmup))
        lrs = []
        for _ in range(3):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs == pytest.approx(expected, rel=1e-12, abs=0), warmup


def test_optimiser_config_reaches_adamw():
    """A non-default eps (the yaml's `model.*_optim.eps`) and the fused-kernel switch (`fast.fused_adamw`) reach the
    AdamW that steps; fused None leaves torch's choice."""
    model = nn.Linear(3, 1)
    opt, _ = configure_adamw(model, OptimConfig(eps=1e-6, fused=True))
    assert [g["eps"] for g in opt.param_groups] == [1e-6, 1e-6]
    assert opt.defaults["fused"] is True
    opt, _ = configure_adamw(model, OptimConfig())
    assert opt.defaults["fused"] is None and [g["eps"] for g in opt.param_groups] == [EPS, EPS]


def test_components_built_without_optimiser_settings_use_the_reference_ones():
    """A component constructed on its own (tools, tests) gets spec §9.2's settings, not None."""
    from diamond_pl.modules.actor_critic import ActorCriticModule
    from diamond_pl.modules.denoiser import DenoiserModule
    from diamond_pl.modules.rew_end import RewEndModule

    modules = {
        "denoiser": DenoiserModule(DenoiserNetConfig(4, cond_channels=8, depths=(1,), channels=(4,), attn_depths=(0,))),
        "rew_end_model": RewEndModule(RewEndNetConfig(4, lstm_dim=8, cond_channels=4, depths=(1,), channels=(4,),
                                                      attn_depths=(0,))),
        "actor_critic": ActorCriticModule(ActorCriticNetConfig(4, lstm_dim=8, channels=(4, 4, 4, 4))),
    }  # fmt: skip
    for component, module in modules.items():
        wd, clip = SPEC[component]
        assert module.optim_cfg == OptimConfig(lr=LR, eps=EPS, weight_decay=wd, warmup_steps=WARMUP,
                                               max_grad_norm=clip), component  # fmt: skip
        opt = module.configure_optimizers()["optimizer"]
        assert [g["weight_decay"] for g in opt.param_groups] == [wd, 0.0], component
