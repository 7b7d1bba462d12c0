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


# ------------------------------------------------------------------------------------------ kill anywhere, resume
def _tensors_equal(a, b, where: str, roots: tuple[str, str] = ("", "")) -> None:
    """Nested dicts/lists of tensors and plain values are identical (paths compared relative to the run folders)."""
    if isinstance(a, str) and isinstance(b, str) and all(roots):
        assert a.replace(roots[0], "<run>") == b.replace(roots[1], "<run>"), (where, a, b)
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, sorted(a), sorted(b))
        for k in a:
            _tensors_equal(a[k], b[k], f"{where}.{k}", roots)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _tensors_equal(x, y, f"{where}[{i}]", roots)
    else:
        assert a == b, (where, a, b)


def _loop_state(ckpt: dict) -> dict:
    return next(v for k, v in ckpt["callbacks"].items() if k.startswith("CollectAndEvaluate"))


def _stores(run: Path, ckpt: dict) -> tuple[EpisodeStore, EpisodeStore]:
    state = ckpt["ReplayDataModule"]
    train, test = EpisodeStore(run / "dataset" / "train"), EpisodeStore(run / "dataset" / "test")
    train.load_state_dict(state["train_store"])
    test.load_state_dict(state["test_store"])
    return train, test


def _assert_same_run(a: Path, b: Path) -> None:
    """Weights, optimisers, schedulers, counters, callback state (collector, RNGs), replay and test episodes,
    snapshots and the final result of two runs are identical."""
    ca, cb = load_ckpt(a), load_ckpt(b)
    roots = (str(a), str(b))
    for key in ("epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers", "loops", "ReplayDataModule"):
        _tensors_equal(ca[key], cb[key], key, roots)
    _tensors_equal(_loop_state(ca), _loop_state(cb), "CollectAndEvaluate", roots)
    fa = torch.load(a / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=True)
    fb = torch.load(b / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=True)
    _tensors_equal(fa["state_dict"], fb["state_dict"], "final.state_dict")
    _tensors_equal(fa["ReplayDataModule"], fb["ReplayDataModule"], "final.ReplayDataModule", roots)
    la, lb = _loop_state(fa), _loop_state(fb)
    assert la["finished"] and lb["finished"] and la["final_metrics"] == lb["final_metrics"]
    for ckpt_a, ckpt_b in ((ca, cb), (fa, fb)):
        for sa, sb in zip(_stores(a, ckpt_a), _stores(b, ckpt_b)):
            assert sa.lengths.tolist() == sb.lengths.tolist() and len(sa) > 0
            for i in range(len(sa)):
                ea, eb = sa.get(i), sb.get(i)
                for field in ("obs", "act", "rew", "end", "trunc"):
                    assert np.array_equal(getattr(ea, field), getattr(eb, field)), (sa.directory, i, field)
                assert (ea.final_obs is None) == (eb.final_obs is None)
    snaps = sorted(p.name for p in (a / "checkpoints").glob("agent_epoch_*.ckpt"))
    assert snaps == sorted(p.name for p in (b / "checkpoints").glob("agent_epoch_*.ckpt")) and snaps
    for name in snaps:
        _tensors_equal(torch.load(a / "checkpoints" / name, weights_only=True)["state_dict"],
                       torch.load(b / "checkpoints" / name, weights_only=True)["state_dict"], name)


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "dataset").rglob("*")) if p.is_file()}


def test_kill_anywhere_then_resume_is_exact(straight_run, tmp_path):
    """One run killed (SIGKILL, or stopped by SIGTERM / SIGINT) at a point of every phase, resumed with --ckpt_path
    last after each, ends identical to the uninterrupted run; resuming it once more changes nothing."""
    from diamond_pl.loop.resume import full_checkpoints

    run = tmp_path / "killed"
    run.mkdir()

    def kill(expect: int, first: bool = False, **where) -> None:
        cb = json.dumps([{"class_path": "crash_callback.KillAt", "init_args": where}])
        proc = fit(run, f"--trainer.callbacks={cb}", *([] if first else ["--ckpt_path=last"]), check=False)
        assert proc.returncode == expect, (where, proc.returncode, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]

    # initial collection, mid-write of the 3rd episode: nothing committed, the next start starts over
    kill(-9, first=True, write="train/episodes/", nth=3)
    assert not full_checkpoints(run / "checkpoints") and list((run / "dataset" / "train" / "episodes").glob(".*.tmp"))
    # SIGTERM before update 5 of epoch 1: stops there, start.ckpt (after the initial collection) resumes it
    kill(128 + 15, sig="TERM", epoch=0, batch=4)
    assert [c.path.name for c in full_checkpoints(run / "checkpoints")] == ["start.ckpt"]
    # evaluation (epoch 2), mid-write of its test episode: the test set of start.ckpt stays intact
    kill(-9, write="test/epoch_00002/", nth=1)
    # weight-only snapshot write (epoch 2, before its full checkpoint): redone, not forgotten
    kill(-9, write="agent_epoch_00001", nth=1)
    # full checkpoint write (epoch 2's, after its evaluation): a temp file, cleaned at the next start
    kill(-9, write="epoch_00001.ckpt", nth=1)
    assert list((run / "checkpoints").glob(".*.tmp"))
    # SIGINT during that evaluation again: the epoch ends and is checkpointed, then the run stops
    kill(128 + 2, sig="INT", write="test/epoch_00002/", nth=1)
    assert full_checkpoints(run / "checkpoints")[-1].path.name == "epoch_00001.ckpt"
    # epoch 4, after Lightning wrote epoch_00003.ckpt and deleted epoch_00002.ckpt, before it re-linked last.ckpt
    kill(-9, last_link_epoch=3)
    assert not (run / "checkpoints" / "last.ckpt").exists()  # dangling
    # final evaluation, mid-write of its episode; then mid-write of final.ckpt
    kill(-9, write="test/final/", nth=1)
    kill(-9, write="final.ckpt", nth=1)
    fit(run, "--ckpt_path=last")
    _assert_same_run(straight_run, run)
    assert not [p for p in run.rglob(".*.tmp")], "stale temp files left"

    before = _files(run)
    proc = fit(run, "--ckpt_path=last")
    assert "this run is finished" in proc.stderr and _files(run) == before
