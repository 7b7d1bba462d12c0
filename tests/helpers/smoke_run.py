"""Run `python -m diamond_pl fit` on the smoke config in a subprocess, everything inside one folder."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
# shorter than the smoke config: 200 initial + 2 x 100 collected steps, 2 final epochs -> 4 epochs
FAST = [
    "--loop.total_env_steps=400", "--loop.num_final_epochs=2", "--loop.eval_every=2", "--loop.final_eval_episodes=1",
    "--model.world_model_env.horizon=5", "--model.actor_critic_loss.backup_every=5", "--model.wm_metric_horizon=2",
    "--trainer.enable_progress_bar=false",
]


def fit(run_dir: Path, *extra: str, check: bool = True, fast: bool = True) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "diamond_pl", "fit", "--config", str(SMOKE), *(FAST if fast else []),
        f"--data.run_dir={run_dir}", f"--checkpoint.dirpath={run_dir}/checkpoints",
        f"--snapshot.dirpath={run_dir}/checkpoints", f"--trainer.logger.init_args.save_dir={run_dir}/logs", *extra,
    ]  # fmt: skip
    # the checkout under test first (not whichever checkout the editable install points at), then the test helpers
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "helpers")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=run_dir, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"fit failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc
