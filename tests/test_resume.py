"""End-to-end: train the smoke config straight vs. killed mid-epoch (SIGKILL) and resumed: identical results."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diamond_pl.data.store import EpisodeStore

from helpers.smoke_run import fit


def load_ckpt(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight")
    fit(run)
    return run


def test_checkpoint_is_weights_only_and_complete(straight_run):
    ckpt = load_ckpt(straight_run)
    assert ckpt["epoch"] == 3  # saved at the end of the 4th (0-based: 3rd) epoch
    assert len(ckpt["optimizer_states"]) == 3 and len(ckpt["lr_schedulers"]) == 3
    loop_state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("CollectAndEvaluate"))
    assert loop_state["num_epochs_collect"] == 2 and loop_state["collector"]["env"] is not None
    store = EpisodeStore(straight_run / "dataset" / "train", "train_dataset")
    store.load_state_dict(ckpt["ReplayDataModule"]["train_store"])
    assert store.num_steps == 400  # the real-step budget, exactly
    # the checkpoint points at the replay data instead of embedding it
    assert (straight_run / "checkpoints" / "last.ckpt").stat().st_size < 3e6


def test_sigkill_mid_epoch_then_resume_is_exact(straight_run, tmp_path):
    run = tmp_path / "resumed"
    run.mkdir()
    crash = json.dumps([{"class_path": "crash_callback.SigkillAt", "init_args": {"epoch": 2, "batch": 3}}])
    killed = fit(run, f"--trainer.callbacks={crash}", check=False)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert load_ckpt(run)["epoch"] == 1  # the last finished epoch
    fit(run, "--ckpt_path=last")

    a, b = load_ckpt(straight_run), load_ckpt(run)
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"]):
        for sa, sb in zip(oa["state"].values(), ob["state"].values()):
            assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["ReplayDataModule"]["train_store"]["lengths"] == b["ReplayDataModule"]["train_store"]["lengths"]
    sa = EpisodeStore(straight_run / "dataset" / "train")
    sb = EpisodeStore(run / "dataset" / "train")
    sa.load_state_dict(a["ReplayDataModule"]["train_store"])
    sb.load_state_dict(b["ReplayDataModule"]["train_store"])
    for i in range(len(sa)):
        ea, eb = sa.get(i), sb.get(i)
        assert np.array_equal(ea.obs, eb.obs) and np.array_equal(ea.act, eb.act) and np.array_equal(ea.rew, eb.rew)


def test_resume_errors_are_clear(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    proc = fit(run, "--ckpt_path=last", check=False)
    assert proc.returncode != 0 and "no last.ckpt" in proc.stderr
    bad = run / "corrupt.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    proc = fit(run, f"--ckpt_path={bad}", check=False)
    assert proc.returncode != 0 and "cannot be read" in proc.stderr and "corrupt.ckpt" in proc.stderr


def test_fresh_run_refuses_to_overwrite_collected_data(straight_run):
    proc = fit(straight_run, check=False)
    assert proc.returncode != 0 and "--ckpt_path last" in proc.stderr


def test_tensorboard_has_the_documented_tags(straight_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events_dir,) = {p.parent for p in (straight_run / "logs").rglob("events.out.tfevents*")}
    ea = EventAccumulator(str(events_dir), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    for tag in [
        "denoiser/train/loss_denoising", "denoiser/train/grad_norm_before_clip", "denoiser/train/lr",
        "rew_end_model/train/loss_rew", "rew_end_model/train/loss_end", "rew_end_model/train/loss_total",
        "rew_end_model/train/classification_metrics/rew_f1_score_class_2",
        "actor_critic/train/policy_entropy", "actor_critic/train/loss_actions", "actor_critic/train/loss_values",
        "actor_critic/train/loss_entropy", "actor_critic/train/loss_total",
        "denoiser/test/loss_denoising", "rew_end_model/test/loss_total",
        "denoiser/test/world_model/model_psnr_1step", "denoiser/test/world_model/copy_psnr_1step",
        "denoiser/test/world_model/model_ssim_2step", "denoiser/test/world_model/copy_ssim_2step",
        "env_steps", "train_dataset/num_steps", "train_dataset/counts/rew_+1", "train_dataset/return",
        "test/return_mean", "test/return_std", "test/human_normalised_score", "final/return_mean",
    ]:  # fmt: skip
        assert tag in scalars, tag
    assert "imagination/real_vs_imagined" in ea.Tags()["images"]
