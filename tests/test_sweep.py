"""sweep: argument checks, the SLURM job array (sbatch parameters; submitit's local executor runs the same array),
the local pool with skip / resume, and one end-to-end local sweep of the smoke config with a killed run resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diamond_pl import sweep
from diamond_pl.loop.results import config_hash

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")

# A stand-in for `python -m diamond_pl fit`: records its arguments, writes results.json (or fails for FAIL_GAME).
FAKE_FIT = '''#!{python}
import json, os, sys
args = dict(a.split("=", 1) for a in sys.argv if a.startswith("--") and "=" in a)
run = args["--data.run_dir"]
with open(os.path.join(run, "argv.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if args["--data.game"] == os.environ.get("FAKE_FAIL_GAME"):
    sys.exit(3)
json.dump({{"game": args["--data.game"], "seed": int(args["--seed_everything"]), "mean": 1.0, "returns": [1.0],
           "human_normalised_score": 0.0, "env_steps": 300, "wall_time_s": 1.0, "config_hash": "x"}},
          open(os.path.join(run, "results.json"), "w"))
'''


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "fake_python"
    path.write_text(FAKE_FIT.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def _main(argv, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(argv)
    return e.value.code, capsys.readouterr()


@pytest.mark.parametrize("extra, needle", [
    (["--games", "Breakout,Tetris"], "--games: Unknown game 'Tetris'"),
    (["--seeds", "zero"], "--seeds 'zero'"),
    (["--data.game=Pong"], "--data.game is set per run by sweep"),
    (["--ckpt_path", "last"], "--ckpt_path is set per run by sweep"),
    (["--max-parallel", "0"], "--max-parallel 0"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, extra, needle):
    code, out = _main(["--config", SMOKE, "--dir", str(tmp_path / "r"), "--games", "Breakout", *extra], capsys)
    assert code == 2 and needle in out.err and out.err.count("\n") == 1 and "Traceback" not in out.err


def test_a_runs_dir_keeps_one_config(tmp_path, capsys, fake_python):
    runs = str(tmp_path / "r")
    sweep.main(["--config", SMOKE, "--dir", runs, "--games", "Pong", "--seeds", "1", "--python", fake_python])
    code, out = _main(["--config", SMOKE, "--dir", runs, "--games", "Pong", "--seeds", "1", "--python", fake_python,
                       "--loop.total_env_steps=400"], capsys)  # fmt: skip
    assert code == 2 and "repeat the same overrides or use another --dir" in out.err


def test_slurm_job_array_parameters(tmp_path, capsys):
    runs = tmp_path / "runs"
    sweep.main(["--config", str(ROOT / "configs" / "breakout.yaml"), "--games", "all", "--seeds", "5",
                "--executor", "slurm", "--dir", str(runs), "--partition", "gpu", "--account", "rl",
                "--timeout-min", "2880", "--mem-gb", "48", "--cpus-per-task", "6", "--array-parallelism", "16",
                "--slurm-setup", "module load cuda", "--slurm-extra", "mail-type=END", "--dry-run",
                "--trainer.precision", "bf16-mixed"])  # fmt: skip
    out = capsys.readouterr().out
    assert "130 runs (26 games x 5 seeds): 0 finished (skipped), 130 to run" in out
    for line in ("#SBATCH --array=0-129%16", "#SBATCH --partition=gpu", "#SBATCH --account=rl",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --time=2880", "#SBATCH --mem=48GB",
                 "#SBATCH --cpus-per-task=6", "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@120",
                 "#SBATCH --mail-type=END", "module load cuda", "-m submitit.core._submit"):  # fmt: skip
        assert line in out, line
    cmds = [line for line in out.splitlines() if " -m diamond_pl fit " in line]
    assert len(cmds) == 130
    pong3 = next(c for c in cmds if "--data.game=Pong " in c and "--seed_everything=3 " in c)
    for arg in ("--trainer.precision bf16-mixed", "--data.seed=3", "--loop.seed=3", f"--data.run_dir={runs}/Pong/seed_3",
                f"--checkpoint.dirpath={runs}/Pong/seed_3/checkpoints", f"--trainer.logger.init_args.save_dir={runs}/Pong/seed_3"):
        assert arg in pong3, arg
    assert "--ckpt_path" not in pong3
    assert not runs.exists()  # a dry run writes nothing


def test_slurm_path_through_submitit_local_executor(tmp_path, capsys, fake_python, monkeypatch):
    """The job array that goes to SLURM, run by submitit's local executor: every task runs FitJob; a failed task is
    reported, a run with last.ckpt resumes, and re-running skips the finished runs."""
    runs = tmp_path / "runs"
    (runs / "Breakout" / "seed_1" / "checkpoints").mkdir(parents=True)
    (runs / "Breakout" / "seed_1" / "checkpoints" / "last.ckpt").write_bytes(b"x")  # an interrupted run
    monkeypatch.setenv("FAKE_FAIL_GAME", "Pong")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = ["--config", SMOKE, "--games", "Breakout,Pong", "--seeds", "2", "--executor", "slurm",
            "--submitit-cluster", "local", "--dir", str(runs), "--python", fake_python]  # fmt: skip
    code, out = _main(argv, capsys)
    assert code == 1 and "2 runs failed: Pong/seed_0, Pong/seed_1" in out.err
    jobs = json.loads((runs / ".submitit" / "slurm_jobs.json").read_text())
    assert sorted(jobs) == ["Breakout/seed_0", "Breakout/seed_1", "Pong/seed_0", "Pong/seed_1"]
    assert "--ckpt_path last" in (runs / "Breakout" / "seed_1" / "argv.txt").read_text()
    assert "--ckpt_path" not in (runs / "Breakout" / "seed_0" / "argv.txt").read_text()
    rows = {(r["game"], r["seed"]): r for r in sweep.sweep_status(runs)}
    assert [rows[k]["state"] for k in sorted(rows)] == ["finished", "finished", "failed", "failed"]
    assert "exit code 3" in rows[("Pong", 0)]["detail"]
    # fixed: only the two failed runs run again
    monkeypatch.delenv("FAKE_FAIL_GAME")
    sweep.main(argv)
    assert "2 finished (skipped), 2 to run" in capsys.readouterr().out
    assert len((runs / "Breakout" / "seed_0" / "argv.txt").read_text().splitlines()) == 1
    assert {r["state"] for r in sweep.sweep_status(runs)} == {"finished"}
    sweep.main(["--dir", str(runs), "--status"])
    assert "4 finished" in capsys.readouterr().out


def test_fitjob_requeues_the_same_run():
    pytest.importorskip("submitit")
    from submitit.helpers import DelayedSubmission

    from diamond_pl.sweep_job import FitJob

    spec = {"game": "Pong", "seed": 2, "run_dir": "/x/Pong/seed_2", "config": "c.yaml"}
    job = FitJob()
    delayed = job.checkpoint(spec)  # what submitit calls on preemption / time-out before requeueing
    assert isinstance(delayed, DelayedSubmission) and delayed.function is job and delayed.args == (spec,)


def test_config_hash_ignores_per_run_fields():
    base = {"seed_everything": 0, "data": {"game": "Pong", "seed": 0, "run_dir": "a", "batch_size": 4},
            "loop": {"seed": 0, "total_env_steps": 300}, "checkpoint": {"dirpath": "a/c"},
            "model": {"env": {"game": "Pong", "env_id": None, "img_size": 64}},
            "trainer": {"logger": {"init_args": {"save_dir": "a"}}, "max_epochs": -1}}  # fmt: skip
    other = json.loads(json.dumps(base))
    other.update(seed_everything=3)
    other["data"].update(game="Breakout", seed=3, run_dir="b")
    other["loop"]["seed"], other["checkpoint"]["dirpath"] = 3, "b/c"
    other["trainer"]["logger"]["init_args"]["save_dir"] = "b"
    other["model"]["env"]["game"] = "Breakout"
    assert config_hash(base) == config_hash(other)
    other["data"]["batch_size"] = 8
    assert config_hash(base) != config_hash(other)
    other["data"]["batch_size"], other["model"]["env"]["img_size"] = 4, 96
    assert config_hash(base) != config_hash(other)


def test_local_sweep_of_the_smoke_config_end_to_end(tmp_path):
    """2 games x 2 seeds of the smoke config on CPU, two at once: the sweep is killed mid-way, `--status` shows it,
    the re-run resumes the killed runs from last.ckpt (or restarts one killed before its first checkpoint) and
    skips the finished ones, a third run does nothing, and `report` covers the four runs."""
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "diamond_pl", "sweep", "--config", SMOKE, "--games", "Breakout,Pong", "--seeds", "2",
           "--executor", "local", "--max-parallel", "2", "--dir", str(runs), "--trainer.enable_progress_bar=false",
           "--loop.total_env_steps=300", "--loop.num_final_epochs=1", "--loop.final_eval_episodes=1",
           "--model.world_model_env.horizon=5", "--model.actor_critic_loss.backup_every=5",
           "--model.wm_metric_horizon=2"]  # fmt: skip
    # 1. start, and kill the whole sweep (driver and fits) as soon as a run has written last.ckpt
    first = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 600
    ckpts = [runs / g / f"seed_{s}" / "checkpoints" / "last.ckpt" for g in ("Breakout", "Pong") for s in (0, 1)]
    while not any(c.exists() for c in ckpts) and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = [c.parents[1] for c in ckpts if c.exists() and not (c.parents[1] / "results.json").exists()]
    assert killed, f"no run was caught between its first checkpoint and its end:\n{first.stdout.read()[-3000:]}"
    status = subprocess.run([*cmd[:4], "--dir", str(runs), "--status"], env=env, capture_output=True, text=True)
    assert status.returncode == 0 and "interrupted" in status.stdout and "resumes from last.ckpt" in status.stdout
    # 2. the same command again: killed runs resume, the rest run
    second = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for run in killed:
        state = json.loads((run / "sweep_run.json").read_text())
        assert state["state"] == "finished" and state["resumed"] and state["attempt"] == 2
        assert "--ckpt_path last" in " ".join(state["command"])
        res = json.loads((run / "results.json").read_text())
        assert res["resumed"] and res["env_steps"] == 300
    results = [json.loads((runs / g / f"seed_{s}" / "results.json").read_text()) for g in ("Breakout", "Pong") for s in (0, 1)]
    assert [(r["game"], r["seed"]) for r in results] == [("Breakout", 0), ("Breakout", 1), ("Pong", 0), ("Pong", 1)]
    assert all(len(r["returns"]) == 1 and r["mean"] == r["returns"][0] and r["env_steps"] == 300 for r in results)
    assert all(r["human_normalised_score"] is not None and r["wall_time_s"] > 0 for r in results)
    assert len({r["config_hash"] for r in results}) == 1
    # 3. once more: nothing to do
    third = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "4 finished (skipped), 0 to run" in third.stdout and "nothing to do" in third.stdout
    # 4. the report
    rep = subprocess.run([sys.executable, "-m", "diamond_pl", "report", str(runs), "--out", str(tmp_path / "report"),
                          "--reps", "200", "--poi-reps", "20"], env=env, capture_output=True, text=True)  # fmt: skip
    assert rep.returncode == 0, rep.stderr[-3000:]
    s = json.loads((tmp_path / "report" / "report.json").read_text())
    assert s["games_present"] == ["Breakout", "Pong"] and s["missing_runs"] == [] and s["runs_per_game_in_aggregates"] == 2
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Only 2 of the 26" in md and (tmp_path / "report" / "performance_profiles.png").is_file()
