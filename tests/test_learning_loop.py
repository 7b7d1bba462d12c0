"""The whole agent learns: `configs/tiny.yaml` on the shipped toy env `BombCatch-v0`, the unchanged DIAMOND loop
(random collection -> denoiser -> reward/end -> actor-critic in imagination -> collection with the policy -> final
evaluation), must end with a return far above a random policy's.

A uniformly random policy scores -0.16 (std 0.77 per episode, 5,000 episodes; the best return is +1). The final
evaluation plays FINAL_EPISODES test episodes, so a random policy's mean has a standard error of 0.77 / sqrt(32) =
0.14; the threshold, RANDOM + 0.6, is over 4 standard errors above it. The env is built so that each kind of broken
loop loses a skill the threshold needs (docs/learning.md, "Does the test catch a broken loop?"): with the world
model's action input scrambled the agent controls nothing in imagination; with rewards stored one step late the
ball's reward (on an episode's last step) is lost; with end flags dropped before imagination the bomb is harmless.
Each of those mutations, run locally, made this test fail.

Runtime: one `fit` subprocess, ~3 min on an idle 2-core CPU (docs/learning.md); deselect with `-m "not learning"`.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "diamond_pl.envs.toy:BombCatch-v0"
RANDOM_RETURN = -0.16  # mean return of a uniformly random policy (5,000 episodes)
MARGIN = 0.6
FINAL_EPISODES = 32


def fit_tiny(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "diamond_pl", "fit", "--config", str(ROOT / "configs" / "tiny.yaml"),
        f"--data.env_id={ENV_ID}", "--seed_everything=0", f"--loop.final_eval_episodes={FINAL_EPISODES}",
        f"--data.run_dir={run_dir}", f"--trainer.logger.init_args.save_dir={run_dir}/logs", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=run_dir, env=env, capture_output=True, text=True, timeout=1800)


@pytest.mark.learning
def test_tiny_config_learns_bombcatch_far_above_random(tmp_path):
    from diamond_pl.tools.plot import read_scalars

    proc = fit_tiny(tmp_path)
    assert proc.returncode == 0, f"fit failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    scalars = read_scalars(tmp_path / "logs")
    steps, returns = scalars["final/return_mean"]
    final = float(returns[-1])
    env_steps = float(scalars["env_steps"][1][-1])
    assert env_steps == 1500  # the config's real-step budget was spent by the loop, not skipped
    assert final > RANDOM_RETURN + MARGIN, (
        f"final return {final:.3f} over {FINAL_EPISODES} episodes is not above random ({RANDOM_RETURN}) + {MARGIN}: "
        f"the DIAMOND loop did not learn"
    )
