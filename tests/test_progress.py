"""What a user sees at start and end: the CPU projection warning (paper config, not smoke), no library noise,
a model summary without FLOPs, and the progress bar's phase / rate / ETA text and the end-of-fit line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diamond_pl.loop.progress import duration

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("litlogger", "LeafSpec", "FLOPs", "Flops", "No seed found", "v_num")


def run_fit(tmp_path: Path, config: str, hook: str, *extra: str) -> str:
    stop = f'--trainer.callbacks+={{"class_path": "stop_callback.StopAt", "init_args": {{"hook": "{hook}"}}}}'
    args = [sys.executable, "-m", "diamond_pl", "fit", "--config", str(ROOT / "configs" / config),
            f"--data.run_dir={tmp_path}/run", f"--checkpoint.dirpath={tmp_path}/run/checkpoints",
            f"--snapshot.dirpath={tmp_path}/run/checkpoints", f"--trainer.logger.init_args.save_dir={tmp_path}/logs",
            "--trainer.accelerator=cpu", stop, *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "helpers")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"stopped at {hook}" in out, out[-4000:]
    return out


def test_paper_config_on_cpu_warns_with_the_projected_time(tmp_path):
    out = run_fit(tmp_path, "breakout.yaml", "setup")
    lines = [l for l in out.splitlines() if "would train for roughly" in l]
    assert len(lines) == 1 and "configs/smoke.yaml" in lines[0], out[-3000:]
    assert " d " in lines[0]  # days, not hours
    assert not [n for n in NOISE if n in out], out[-3000:]


def test_smoke_config_starts_quietly(tmp_path):
    out = run_fit(tmp_path, "smoke.yaml", "on_train_start", "--trainer.enable_model_summary=true")
    assert "would train for roughly" not in out
    assert not [n for n in NOISE if n in out], out[-3000:]
    assert "denoiser" in out and "DenoiserModule" in out  # our summary, without FLOPs
    assert "initial collection: 200+ random-policy env steps" in out


def test_duration():
    assert [duration(s) for s in (12, 250, 7300, 3 * 86400 + 4 * 3600)] == ["12 s", "4 min 10 s", "2 h 1 min", "3 d 4 h"]
