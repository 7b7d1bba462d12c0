"""The world model learns, on CPU in about a minute (../shared/reference/lightning_notes.md, last section: what such a
test can and cannot show).

A briefly trained denoiser still loses to "repeat the last frame" on real Atari frames (most pixels do not change), so:
  (a) on real Breakout frames, the held-out denoising loss (fixed noise, held-out episodes) falls far below its value
      at initialisation;
  (b) on a synthetic scene where copying fails by construction (a square that moves several pixels per step in the
      direction the action says), the sampled next frame beats the copy baseline, measured with the module's own
      world-model metrics;
  (c) the reward/end model learns a reward that depends on the action, seen in its per-class metrics.
Frames are smaller than 64x64 to keep the file fast (the networks are fully convolutional up to the LSTM inputs);
`-m slow` adds (a) at 64x64 with more data and updates.
"""

import math

import numpy as np
import pytest
import torch

from diamond_pl.data.batch import Batch
from diamond_pl.data.collector import Collector, RandomPolicy
from diamond_pl.data.sampler import SegmentSampler
from diamond_pl.data.store import EpisodeStore
from diamond_pl.envs.atari import AtariEnv
from diamond_pl.modules.denoiser import DenoiserModule, denoiser_loss
from diamond_pl.modules.optim import OptimConfig, configure_adamw
from diamond_pl.modules.rew_end import RewEndModule
from diamond_pl.nets.denoiser_net import DenoiserNetConfig
from diamond_pl.nets.rew_end_net import RewEndNetConfig


def train(model: torch.nn.Module, loss_fn, updates: int, lr: float, max_grad_norm: float) -> list[float]:
    """Plain AdamW steps with the project's parameter groups, warm-up and clipping; returns the training losses."""
    opt, sched = configure_adamw(model, OptimConfig(lr=lr, warmup_steps=10))
    losses = []
    for _ in range(updates):
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR over all pixels of frames in [-1, 1] (data range 2)."""
    return 10 * math.log10(4 / torch.mean((pred - target) ** 2).item())


# --- (a) real frames --------------------------------------------------------------------------------------------------


def collect(directory, steps: int, seed: int, size: int) -> EpisodeStore:
    env = AtariEnv("Breakout", 1, done_on_life_loss=True, size=size, seed=seed)
    store = EpisodeStore(directory)
    Collector(env, store, RandomPolicy(env.num_actions, seed=seed), seed=seed).collect(num_steps=steps)
    env.close()
    return store


@pytest.mark.parametrize(
    "size, steps, updates",
    [(32, 400, 200), pytest.param(64, 2000, 600, marks=pytest.mark.slow)],
)
def test_denoiser_held_out_loss_falls_on_real_frames(tmp_path, size, steps, updates):
    torch.manual_seed(0)
    train_store = collect(tmp_path / "train", steps, seed=0, size=size)
    held_out_store = collect(tmp_path / "held_out", 150, seed=1, size=size)  # other episodes, never trained on
    n = 4
    module = DenoiserModule(
        DenoiserNetConfig(num_actions=4, num_steps_conditioning=n, cond_channels=32, depths=(1, 1, 1, 1),
                          channels=(16, 16, 16, 16), attn_depths=(0, 0, 0, 0))  # fmt: skip
    )
    held_out = SegmentSampler(held_out_store, 32, n + 1, sample_weights=None, seed=0).sample()

    def held_out_loss() -> float:
        with torch.no_grad():  # the same sigmas and noise every time: only the model changes
            generator = torch.Generator().manual_seed(0)
            obs = held_out.obs_float()
            return denoiser_loss(module.denoiser, obs, held_out.act, held_out.mask_padding, generator=generator)[0].item()

    sampler = SegmentSampler(train_store, 8, n + 1, sample_weights=None, seed=1)
    before = held_out_loss()
    losses = train(module.denoiser, lambda: module.loss(sampler.sample())[0], updates, 1e-3, 1.0)
    after = held_out_loss()
    print(f"\nheld-out denoising loss ({size}x{size}, {updates} updates): {before:.3f} -> {after:.3f}")
    assert all(math.isfinite(x) for x in losses)
    assert after < 0.25 * before, (before, after)


# --- (b) a scene where copying fails ----------------------------------------------------------------------------------

SIDE, SQUARE, SPEED = 16, 3, 3  # 16x16 frames, a 3x3 square moving 3 pixels per step
MOVES = np.array([(0, -SPEED), (0, SPEED), (-SPEED, 0), (SPEED, 0)])  # action -> (dy, dx): left, right, up, down


def moving_square(rng: np.random.Generator, batch_size: int, seq_len: int) -> Batch:
    """Black frames with a white square at a random start, moved by each action (stopping at the borders)."""
    batch = Batch.zeros(batch_size, seq_len, (3, SIDE, SIDE))
    act = rng.integers(0, len(MOVES), size=(batch_size, seq_len))
    obs = batch.obs.numpy()
    for i, pos in enumerate(rng.integers(0, SIDE - SQUARE + 1, size=(batch_size, 2))):
        for t in range(seq_len):
            obs[i, t, :, pos[0] : pos[0] + SQUARE, pos[1] : pos[1] + SQUARE] = 255
            pos = np.clip(pos + MOVES[act[i, t]], 0, SIDE - SQUARE)
    batch.act.numpy()[:] = act
    batch.mask_padding.numpy()[:] = True
    return batch


def test_denoiser_beats_copying_where_copying_fails():
    torch.manual_seed(0)
    n, horizon = 2, 2
    module = DenoiserModule(
        DenoiserNetConfig(num_actions=4, num_steps_conditioning=n, cond_channels=32, depths=(1, 1), channels=(16, 16),
                          attn_depths=(0, 0)),
        wm_metric_horizon=horizon,
    )  # fmt: skip
    test = moving_square(np.random.default_rng(1), 64, n + horizon)

    def metrics() -> dict[str, float]:
        module.update_world_model_metrics(test)
        out = {k.removeprefix("world_model/"): v.item() for k, v in module.compute_world_model_metrics().items()}
        assert module.compute_world_model_metrics() == {}, "metrics must reset after compute"
        return out

    names = {f"{who}_{m}_{s}" for who in ("model", "copy") for m in ("psnr", "ssim") for s in ("1step", "2step")}
    before = metrics()
    assert set(before) == names
    rng = np.random.default_rng(0)
    train(module.denoiser, lambda: module.loss(moving_square(rng, 32, n + 1))[0], 300, 2e-3, 1.0)
    after = metrics()

    # sane values: the copy baseline is what it says, SSIM within its range
    obs = test.obs_float()
    assert after["copy_psnr_1step"] == pytest.approx(psnr(obs[:, n - 1], obs[:, n]), abs=1e-3)
    assert after["copy_psnr_1step"] == before["copy_psnr_1step"]
    assert all(math.isfinite(v) for v in after.values())
    assert all(-1 <= after[k] <= 1 for k in names if "ssim" in k)
    blank = psnr(-torch.ones_like(obs[:, n]), obs[:, n])  # black frames: the square forgotten
    print(f"\n1-step PSNR: model {before['model_psnr_1step']:.1f} -> {after['model_psnr_1step']:.1f} dB, "
          f"copy {after['copy_psnr_1step']:.1f} dB, empty frame {blank:.1f} dB; 2-step: model "
          f"{after['model_psnr_2step']:.1f}, copy {after['copy_psnr_2step']:.1f}")  # fmt: skip
    assert before["model_psnr_1step"] < after["copy_psnr_1step"], "an untrained model should not beat copying"
    # the square must be drawn where the action moved it: better than copying, and better than drawing no square
    assert after["model_psnr_1step"] > after["copy_psnr_1step"] + 8
    assert after["model_psnr_1step"] > blank + 5
    assert after["model_ssim_1step"] > after["copy_ssim_1step"]
    assert after["model_psnr_2step"] > after["copy_psnr_2step"]


# --- (c) reward/end model ---------------------------------------------------------------------------------------------


def action_rewards(rng: np.random.Generator, batch_size: int, seq_len: int = 6) -> Batch:
    """Noise frames; action 1 earns +1, action 2 costs -1, the others nothing: the sign is a function of the action."""
    batch = Batch.zeros(batch_size, seq_len, (3, SIDE, SIDE))
    batch.obs.numpy()[:] = rng.integers(0, 256, size=batch.obs.shape, dtype=np.uint8)
    act = rng.integers(0, 4, size=(batch_size, seq_len))
    batch.act.numpy()[:] = act
    batch.rew.numpy()[:] = np.select([act == 1, act == 2], [1.0, -1.0], 0.0)
    batch.mask_padding.numpy()[:] = True
    return batch


def test_rew_end_model_learns_action_dependent_rewards():
    torch.manual_seed(0)
    module = RewEndModule(
        RewEndNetConfig(num_actions=4, lstm_dim=32, cond_channels=16, depths=(1, 1), channels=(16, 16),
                        attn_depths=(0, 0), img_size=SIDE)  # fmt: skip
    )
    rng = np.random.default_rng(0)
    _, metrics = module.loss(action_rewards(rng, 16), "train")
    assert set(metrics) == {"loss_rew", "loss_end", "loss_total"}
    train_metrics = module.classification_metrics("train")
    keys = {
        f"classification_metrics/{head}_{m}_class_{k}"
        for head, classes in (("rew", 3), ("end", 2))
        for k in range(classes)
        for m in ("precision", "recall", "f1_score")
    }
    assert set(train_metrics) == keys
    assert all(0 <= v.item() <= 1 for v in train_metrics.values())

    train(module.net, lambda: module.loss(action_rewards(rng, 16), "train")[0], 80, 2e-3, 100.0)
    with torch.no_grad():
        module.loss(action_rewards(np.random.default_rng(1), 64), "test")
    test = module.classification_metrics("test")
    print("\nreward classes (-1, 0, +1) recall:",
          [round(test[f"classification_metrics/rew_recall_class_{k}"].item(), 3) for k in range(3)])  # fmt: skip
    for k in (0, 2):  # the penalised and the rewarded class
        assert test[f"classification_metrics/rew_recall_class_{k}"] > 0.9
        assert test[f"classification_metrics/rew_precision_class_{k}"] > 0.9
