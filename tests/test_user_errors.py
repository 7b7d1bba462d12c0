"""Bad inputs through the real entry point (`diamond_pl.cli.main`, what `python -m diamond_pl` runs): each is one line
naming the offending value, exit status 2 (usage) or 1 (runtime), no traceback, and nothing written before it."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diamond_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


class Cannot:  # an object torch.load(weights_only=True) refuses to unpickle
    pass


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    corrupt = d / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    pickled = d / "pickled.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "callbacks": {}, "extra": Cannot()}, pickled)
    snapshot = d / "snapshot.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"game": "Breakout"}}, snapshot)
    breakout = d / "breakout_run.ckpt"  # enough of a full checkpoint for the checks before any work
    torch.save({"state_dict": {}, "loops": {}, "callbacks": {}, "epoch": 1, "global_step": 20,
                "hyper_parameters": {"game": "Breakout"}, "datamodule_hyper_parameters": {"game": "Breakout"}}, breakout)
    no_test = d / "static_no_test"
    (no_test / "train").mkdir(parents=True)
    held = d / "held_run"  # a run folder that already holds a run
    (held / "checkpoints").mkdir(parents=True)
    (held / "checkpoints" / "epoch_00001.ckpt").write_bytes(breakout.read_bytes())
    held_net = d / "held_net_run"  # a smoke-size run (denoiser channels 8) to resume with other network sizes
    (held_net / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "loops": {}, "callbacks": {}, "epoch": 1, "global_step": 20,
                "hyper_parameters": {"env": {"game": "Breakout"}, "denoiser": {"channels": [8, 8, 8, 8]}},
                "datamodule_hyper_parameters": {"game": "Breakout"}}, held_net / "checkpoints" / "epoch_00001.ckpt")
    existing = d / "exists.ckpt"
    existing.write_bytes(b"x")
    return {"corrupt": corrupt, "pickled": pickled, "snapshot": snapshot, "breakout": breakout, "no_test": no_test,
            "held": held, "held_net": held_net, "existing": existing, "dir": d}


def fit_args(run: Path, *extra: str) -> list[str]:
    return ["fit", "--config", SMOKE, f"--data.run_dir={run}", f"--trainer.logger.init_args.save_dir={run}/logs",
            f"--checkpoint.dirpath={run}/checkpoints", f"--snapshot.dirpath={run}/checkpoints",
            "--trainer.enable_progress_bar=false", *extra]


# (id, argv builder(run folder, files), exit status, what the message must name)
CASES = [
    ("batch_size_0", lambda r, f: fit_args(r, "--data.batch_size", "0"), 2, "--data.batch_size"),
    ("batch_size_negative", lambda r, f: fit_args(r, "--data.batch_size", "-4"), 2, "-4"),
    ("devices_3_plain_ddp", lambda r, f: fit_args(r, "--trainer.devices", "3"), 2, "--trainer.devices 3"),
    ("devices_2_ddp", lambda r, f: fit_args(r, "--trainer.devices", "2", "--trainer.strategy", "ddp"), 2,
     "ddp_find_unused_parameters_true"),
    ("unknown_game", lambda r, f: fit_args(r, "--data.game", "Pongg"), 2, "Pongg"),
    ("game_vs_checkpoint", lambda r, f: fit_args(r, "--data.game", "Pong", f"--ckpt_path={f['breakout']}"), 2,
     "Breakout"),
    ("ckpt_missing", lambda r, f: fit_args(r, f"--ckpt_path={f['dir']}/nope.ckpt"), 2, "nope.ckpt"),
    ("ckpt_corrupt", lambda r, f: fit_args(r, f"--ckpt_path={f['corrupt']}"), 2, "corrupt.ckpt"),
    ("ckpt_pickled", lambda r, f: fit_args(r, f"--ckpt_path={f['pickled']}"), 2, "never unpickles"),
    ("ckpt_weight_only", lambda r, f: fit_args(r, f"--ckpt_path={f['snapshot']}"), 2, "snapshot.ckpt"),
    ("last_in_empty_folder", lambda r, f: fit_args(r, "--ckpt_path=last"), 2, "no last.ckpt"),
    ("folder_holds_a_run", lambda r, f: fit_args(f["held"]), 2,
     "--ckpt_path last"),
    ("networks_vs_checkpoint", lambda r, f: fit_args(f["held_net"], "--ckpt_path=last",
                                                     "--model.denoiser.channels=[16,16,16,16]"), 2,
     "--model.denoiser.channels [16, 16, 16, 16] does not match"),
    ("level_lists_disagree", lambda r, f: fit_args(r, "--model.rew_end_model.channels=[8,8,8]"), 2,
     "model.rew_end_model: channels has 3, depths has 4"),
    ("levels_vs_frame_size", lambda r, f: fit_args(r, *(f"--model.rew_end_model.{k}=[{','.join([v] * 8)}]" for k, v in
                                                        (("channels", "8"), ("depths", "1"), ("attn_depths", "0")))),
     2, "data.img_size 64 is not a multiple of 128"),
    ("depth_0", lambda r, f: fit_args(r, "--model.denoiser.depths=[1,0,1,1]"), 2, "model.denoiser.depths = [1, 0, 1, 1]"),
    ("no_conditioning_frames", lambda r, f: fit_args(r, "--model.denoiser.num_steps_conditioning=0"), 2,
     "num_steps_conditioning = 0"),
    ("cond_channels_vs_actions", lambda r, f: fit_args(r, "--model.denoiser.cond_channels=18"), 2,
     "cond_channels = 18"),
    ("static_dataset_missing", lambda r, f: fit_args(r, f"--data.static_dataset={f['dir']}/nodata"), 2, "nodata"),
    ("static_dataset_no_test", lambda r, f: fit_args(r, f"--data.static_dataset={f['no_test']}"), 2, "test/"),
    ("epsilon_2", lambda r, f: fit_args(r, "--loop.epsilon", "2"), 2, "--loop.epsilon"),
    ("step_budget", lambda r, f: fit_args(r, "--loop.total_env_steps", "450"), 2, "450"),
    ("negative_updates", lambda r, f: fit_args(r, "--data.updates_per_epoch.denoiser", "-1"), 2,
     "update count denoiser must be >= 0, got -1"),
    ("sample_weights_sum", lambda r, f: fit_args(r, "--data.sample_weights", "[0.5,0.6]"), 2, "sample_weights"),
    ("unknown_option", lambda r, f: fit_args(r, "--data.batchsize", "4"), 2, "batchsize"),
    ("bad_precision", lambda r, f: fit_args(r, "--trainer.precision", "17"), 2, "17"),
    ("config_missing", lambda r, f: ["fit", "--config", f"{f['dir']}/nope.yaml"], 2, "nope.yaml"),
    ("evaluate_missing_ckpt", lambda r, f: ["evaluate", "--ckpt_path", f"{f['dir']}/gone.ckpt"], 2, "gone.ckpt"),
    ("evaluate_corrupt_ckpt", lambda r, f: ["evaluate", "--ckpt_path", str(f["corrupt"])], 2, "corrupt.ckpt"),
    ("dream_pickled_ckpt", lambda r, f: ["dream", "--ckpt_path", str(f["pickled"])], 2, "pickled.ckpt"),
    ("import_missing_agent", lambda r, f: ["import-diamond", f"{f['dir']}/Gone.pt", "--out", f"{r}/x.ckpt"], 2,
     "Gone.pt"),
    ("import_out_exists", lambda r, f: ["import-diamond", str(f["breakout"]), "--out", str(f["existing"])], 2,
     "exists.ckpt"),
    ("benchmark_missing_config", lambda r, f: ["benchmark", "--config", f"{f['dir']}/nope2.yaml"], 2, "nope2.yaml"),
    ("benchmark_bad_phase", lambda r, f: ["benchmark", "--config", SMOKE, "--phases", "warp"], 2, "warp"),
    ("unknown_command", lambda r, f: ["fitt"], 2, "fitt"),
]


def _without_logging_errors(err: str) -> str:
    """In-process only: log handlers made during an earlier test keep that test's (closed) captured stderr, and the
    logging module reports each such write as "--- Logging error ---" ... "Arguments: ..."; that is the test harness,
    not the command (the process test below checks a real process's stderr)."""
    kept, skipping = [], False
    for line in err.splitlines():
        if line.startswith("--- Logging error ---"):
            skipping = True
        elif skipping and line.startswith("Arguments:"):
            skipping = False
        elif not skipping:
            kept.append(line)
    return "\n".join(kept)


@pytest.mark.parametrize("name,argv,code,names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(name, argv, code, names, files, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DIAMOND_PL_DEBUG", raising=False)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(argv(run, files))
    out, err = capsys.readouterr()
    err = _without_logging_errors(err)
    assert e.value.code == code, (e.value.code, err[-2000:])
    assert "Traceback" not in out + err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors and names in err, err[-2000:]
    # nothing was collected or trained before the error
    assert not list(run.rglob("*.npz")) and not list(run.rglob("*.ckpt"))


def test_disk_full_is_a_runtime_error_and_the_folder_stays_usable(tmp_path, capsys, monkeypatch):
    import diamond_pl.atomic as atomic

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_atomic_write", full)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(fit_args(run))
    err = _without_logging_errors(capsys.readouterr().err)
    assert e.value.code == 1 and "disk full while writing" in err and "--ckpt_path last" in err, err[-2000:]
    assert "Traceback" not in err


def test_process_exit_status_and_debug_traceback(tmp_path):
    """The same through a real process; --debug (or DIAMOND_PL_DEBUG=1) shows the traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("DIAMOND_PL_DEBUG", None)
    args = [sys.executable, "-m", "diamond_pl", *fit_args(tmp_path / "run", "--data.batch_size", "0")]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "fit: error: --data.batch_size must be a positive integer, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(args + ["--debug"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "batch_size" in proc.stderr
