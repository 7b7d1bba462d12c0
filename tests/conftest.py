import os
from pathlib import Path

import pytest

GOLDEN_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
GOLDEN_DIR = GOLDEN_ROOT / "diamond_small"
ATARI26_DIR = GOLDEN_ROOT / "atari26"


def pytest_configure(config):
    # One intra-op thread: the test networks are small, and OpenMP threads that spin-wait for a busy second core
    # make a run many times slower instead of faster. Subprocess runs get OMP_NUM_THREADS=1 for the same reason.
    import torch

    torch.set_num_threads(int(os.environ.get("DIAMOND_PL_TEST_THREADS", "1")))


def in_ci() -> bool:
    """CI sets `CI` (GitHub Actions, GitLab, ... set it to "true"); there missing reference data is an error."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_golden(path: Path) -> Path:
    """`path` if it exists; otherwise skip locally, but fail under CI: a CI without ../shared would otherwise pass
    with no comparison against the reference at all."""
    if not path.exists():
        message = f"golden data not found at {path} (expected ../shared/golden beside the checkout)"
        if in_ci():
            pytest.fail(message + "; CI is set, so the golden tests must run", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return require_golden(GOLDEN_DIR)


@pytest.fixture(scope="session")
def atari26_traces_path() -> Path:
    return require_golden(ATARI26_DIR / "env_traces.npz")


@pytest.fixture(scope="session")
def golden_outputs(golden_dir):
    import torch

    return torch.load(golden_dir / "reference_outputs.pt", weights_only=True)


@pytest.fixture(scope="session")
def golden_state_dict(golden_dir):
    import torch

    return torch.load(golden_dir / "agent_state_dict.pt", weights_only=True)


@pytest.fixture(scope="session")
def golden_config(golden_dir):
    import json

    return json.loads((golden_dir / "config.json").read_text())


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One tiny trained run shared by the tool and notebook tests (~45 s on 2 cores): the smoke config shortened to
    200 initial + 100 collected steps and 1 final epoch; holds checkpoints/last.ckpt, dataset/{train,test} (the test
    set: one full game from the final evaluation) and TensorBoard logs under logs/."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run = tmp_path_factory.mktemp("smoke_run")
    args = [
        sys.executable, "-m", "diamond_pl", "fit", "--config", str(root / "configs" / "smoke.yaml"),
        f"--data.run_dir={run}", f"--checkpoint.dirpath={run}/checkpoints", f"--snapshot.dirpath={run}/checkpoints",
        f"--trainer.logger.init_args.save_dir={run}/logs", "--trainer.enable_progress_bar=false",
        "--loop.total_env_steps=300", "--loop.num_final_epochs=1", "--loop.final_eval_episodes=1",
        "--model.world_model_env.horizon=5", "--model.actor_critic_loss.backup_every=5", "--model.wm_metric_horizon=2",
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=run, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"smoke training failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return run
