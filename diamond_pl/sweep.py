"""`python -m diamond_pl sweep`: one `fit` per (game, seed), on one machine or as a SLURM job array.

    python -m diamond_pl sweep --config configs/breakout.yaml --games all --seeds 5 --executor slurm \\
        --dir runs/diamond --partition gpu --timeout-min 1440            # 130 runs, 32 at once
    python -m diamond_pl sweep --config configs/breakout.yaml --games Breakout,Pong --seeds 2 --executor local \\
        --dir runs/two                                                   # one run per GPU (or one on a CPU)
    python -m diamond_pl sweep --dir runs/diamond --status               # pending / running / finished / failed

Layout: RUNS_DIR/sweep.json (the sweep's config, overrides, games, seeds) and one folder per run,
RUNS_DIR/<Game>/seed_<k>/ holding `dataset/`, `checkpoints/`, `logs/` (TensorBoard), `fit.log` (the fit's output),
`sweep_run.json` (the last attempt: state, host, pid, SLURM job, exit code) and, once finished, `results.json`.
Seed k fixes `seed_everything`, `data.seed` and `loop.seed`, so a run is reproducible on its own.

Re-running the same command skips finished runs (results.json present) and resumes unfinished ones with
`--ckpt_path last` when `checkpoints/last.ckpt` exists; a run killed before its first checkpoint starts again (its
partial data is moved to `stale/`, never deleted). On SLURM every job is a submitit `Checkpointable`: on preemption or
time-out submitit requeues it (`--max-requeues` time-outs at most) and the requeued job resumes from `last.ckpt`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from diamond_pl.atomic import atomic_write_bytes
from diamond_pl.games import ATARI_100K_GAMES, UnknownGameError, validate_game

MANIFEST = "sweep.json"
STATE_FILE = "sweep_run.json"
LOG_FILE = "fit.log"
RESULTS_FILE = "results.json"  # written by diamond_pl.loop.results (not imported: it would import torch)
SUBMITIT_DIR = ".submitit"
JOBS_FILE = "slurm_jobs.json"

# fit arguments the sweep sets for each run; a user override of one of them would break the layout or the seeding
PER_RUN_ARGS = ("--config", "--seed_everything", "--data.game", "--data.seed", "--loop.seed", "--data.run_dir",
                "--checkpoint.dirpath", "--snapshot.dirpath", "--trainer.default_root_dir", "--ckpt_path",
                "--trainer.logger.init_args.save_dir", "--trainer.logger.init_args.name")  # fmt: skip
SLURM_LIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
              "REQUEUE_FED", "STAGE_OUT", "SIGNALING"}  # fmt: skip


class SweepError(ValueError):
    """Bad input: printed as one line, exit code 2."""


# ------------------------------------------------------------------------------------------------- runs and specs
@dataclass
class RunSpec:
    """Everything a job needs to run (or resume) one fit; plain values, so it travels as JSON or to submitit."""

    game: str
    seed: int
    run_dir: str
    config: str
    overrides: list[str] = field(default_factory=list)
    logger_dirs: bool = True  # the config's logger has init_args.save_dir/name to point into the run folder
    python: str | None = None  # interpreter for the fit; None: the job's own (sys.executable where it runs)

    @property
    def key(self) -> str:
        return f"{self.game}/seed_{self.seed}"


def run_dir_of(runs_dir: Path, game: str, seed: int) -> Path:
    return Path(runs_dir) / game / f"seed_{seed}"


def run_folders(runs_dir: Path):
    """(game, seed, folder) for every `<Game>/seed_<k>` folder under runs_dir, in game order."""
    runs_dir = Path(runs_dir)
    for game in ATARI_100K_GAMES:
        gdir = runs_dir / game
        if not gdir.is_dir():
            continue
        seeds = []
        for sdir in gdir.glob("seed_*"):
            suffix = sdir.name.removeprefix("seed_")
            if sdir.is_dir() and suffix.isdigit():
                seeds.append(int(suffix))
        for seed in sorted(seeds):
            yield game, seed, gdir / f"seed_{seed}"


def parse_games(text: str) -> list[str]:
    if text.strip().lower() == "all":
        return list(ATARI_100K_GAMES)
    games = []
    for name in (t.strip() for t in text.split(",")):
        if not name:
            continue
        try:
            games.append(validate_game(name))
        except UnknownGameError as e:
            raise SweepError(f"--games: {e} Or use --games all.") from None
    if not games:
        raise SweepError("--games is empty: give `all` or a comma-separated list such as Breakout,Pong")
    return list(dict.fromkeys(games))


def parse_seeds(text: str) -> list[int]:
    """`5` -> seeds 0..4; `0,3,7` -> those seeds."""
    try:
        if "," in text:
            seeds = [int(t) for t in text.split(",") if t.strip()]
        else:
            n = int(text)
            if n < 1:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        raise SweepError(f"--seeds {text!r}: give a number of seeds (5 = seeds 0..4) or a list such as 0,3,7") from None
    if any(s < 0 for s in seeds):
        raise SweepError(f"--seeds {text!r}: seeds must be >= 0")
    return list(dict.fromkeys(seeds))


def check_overrides(overrides: list[str]) -> None:
    for tok in overrides:
        if not tok.startswith("--"):
            continue
        name = tok.split("=", 1)[0]
        if name in PER_RUN_ARGS:
            raise SweepError(f"{name} is set per run by sweep (games: --games, seeds: --seeds, folders: --dir); "
                             f"drop it from the fit overrides")  # fmt: skip


def config_logger_has_dirs(config: Path) -> bool:
    """True when the config's trainer.logger is a single logger class with init_args (TensorBoard, CSV): its save_dir
    and name can then be pointed into the run folder."""
    import yaml

    try:
        cfg = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as e:
        raise SweepError(f"--config {config}: not valid YAML ({e})") from None
    logger = (cfg.get("trainer") or {}).get("logger") if isinstance(cfg, dict) else None
    return isinstance(logger, dict) and "class_path" in logger


def fit_command(spec: RunSpec, resume: bool) -> list[str]:
    run = Path(spec.run_dir)
    cmd = [spec.python or sys.executable, "-m", "diamond_pl", "fit", "--config", spec.config, *spec.overrides,
           f"--seed_everything={spec.seed}", f"--data.game={spec.game}", f"--data.seed={spec.seed}",
           f"--loop.seed={spec.seed}", f"--data.run_dir={run}", f"--checkpoint.dirpath={run / 'checkpoints'}",
           f"--snapshot.dirpath={run / 'checkpoints'}", f"--trainer.default_root_dir={run}"]  # fmt: skip
    if spec.logger_dirs:
        cmd += [f"--trainer.logger.init_args.save_dir={run}", "--trainer.logger.init_args.name=logs"]
    if resume:
        cmd += ["--ckpt_path", "last"]
    return cmd


# --------------------------------------------------------------------------------------------- one run (the job)
def _write_state(run: Path, state: dict) -> None:
    atomic_write_bytes(run / STATE_FILE, (json.dumps(state, indent=1) + "\n").encode())


def read_state(run: Path) -> dict | None:
    try:
        return json.loads((run / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _has_episodes(run: Path) -> bool:
    train = run / "dataset" / "train"
    return train.is_dir() and any(train.rglob("*.npz"))


def prepare_run(run: Path) -> bool:
    """Decide how the run (re)starts: True = resume from checkpoints/last.ckpt. A run killed before its first
    checkpoint has data the fit would refuse to overwrite: it goes to stale/<time>/ and the run starts afresh."""
    from diamond_pl.loop.resume import newest_checkpoint

    # any complete full checkpoint resumes (`--ckpt_path last` takes the newest): start.ckpt before the first epoch,
    # and a last.ckpt link left dangling by a kill between Lightning's delete and re-link
    if (run / "checkpoints" / "last.ckpt").exists() or newest_checkpoint(run / "checkpoints") is not None:
        return True
    if _has_episodes(run) or (run / "checkpoints").is_dir():
        dest = run / "stale" / time.strftime("%Y%m%d-%H%M%S")
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("dataset", "checkpoints", "logs"):
            if (run / name).exists():
                shutil.move(str(run / name), str(dest / name))
        with open(run / LOG_FILE, "a") as log:
            log.write(f"\n[sweep] no last.ckpt: the partial run moved to {dest}; starting again\n")
    return False


def _slurm_job_id() -> str | None:
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if job and task:
        return f"{job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


# children of this process (local executor), terminated on Ctrl-C
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()


def run_fit(spec: RunSpec | dict, env: dict | None = None) -> dict:
    """Run (or resume) one fit to its end, unless it already finished. Returns {"state", "returncode", ...}; the fit's
    output is appended to <run>/fit.log and the attempt is recorded in <run>/sweep_run.json."""
    spec = spec if isinstance(spec, RunSpec) else RunSpec(**spec)
    run = Path(spec.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if (run / RESULTS_FILE).is_file():
        return {"state": "finished", "skipped": True, "returncode": 0}
    resume = prepare_run(run)
    cmd = fit_command(spec, resume)
    previous = read_state(run) or {}
    state = {"state": "running", "attempt": int(previous.get("attempt", 0)) + 1, "resumed": resume,
             "host": socket.gethostname(), "pid": None, "slurm_job": _slurm_job_id(),
             "started": time.time(), "ended": None, "returncode": None, "command": cmd}  # fmt: skip
    child_env = {**os.environ, **(env or {})}
    with open(run / LOG_FILE, "a") as log:
        log.write(f"\n[sweep] attempt {state['attempt']} on {state['host']}"
                  f"{' resuming from last.ckpt' if resume else ''}: {' '.join(cmd)}\n")  # fmt: skip
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=run)
        with _CHILDREN_LOCK:
            _CHILDREN.add(proc)
        try:
            state["pid"] = proc.pid
            _write_state(run, state)
            rc = proc.wait()
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(proc)
    finished = rc == 0 and (run / RESULTS_FILE).is_file()
    state.update(ended=time.time(), returncode=rc, state="finished" if finished else "failed")
    if rc == 0 and not finished:
        state["error"] = "the fit ended without results.json (no final evaluation: final_eval_episodes 0?)"
    _write_state(run, state)
    return state


# ----------------------------------------------------------------------------------------------------- status
def _last_epoch(run: Path) -> str | None:
    last = run / "checkpoints" / "last.ckpt"
    if not last.exists():
        return None
    target = os.path.basename(os.path.realpath(last))
    digits = "".join(ch for ch in target if ch.isdigit())
    return f"last.ckpt (epoch {int(digits)})" if digits and target != "last.ckpt" else "last.ckpt"


def _pid_alive(pid: int) -> bool:
    """Is the fit with this pid still running here? On Linux /proc also rules out zombies (a killed fit whose parent
    died too waits to be reaped) and a recycled pid (the command line must be a diamond_pl fit)."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").is_dir():
        try:
            status = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError):
            return False
        return status not in ("Z", "X") and b"diamond_pl" in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slurm_states(runs_dir: Path, job_ids: list[str]) -> dict[str, str]:
    """SLURM states of the given jobs through submitit (one sacct call); empty when unavailable."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    try:
        import submitit

        folder = Path(runs_dir) / SUBMITIT_DIR / "%j"
        return {j: submitit.SlurmJob(folder, j).state for j in job_ids}
    except Exception:  # no submitit, sacct failing, ...: status falls back to the run folders
        return {}


def run_status(run: Path, submitted: str | None = None, slurm: dict[str, str] | None = None) -> tuple[str, str]:
    """(pending | running | finished | failed, detail) of one run folder."""
    results = run / RESULTS_FILE
    if results.is_file():
        try:
            r = json.loads(results.read_text())
            hns = r.get("human_normalised_score")
            return "finished", (f"mean {r['mean']:.1f}" + (f", HNS {hns:.3f}" if hns is not None else "")
                                + f", {r.get('env_steps')} env steps, {r.get('wall_time_s', 0) / 3600:.2f} h")  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError):
            return "failed", f"{results} is unreadable: delete it to redo the final evaluation"
    slurm = slurm or {}
    ckpt = _last_epoch(run)
    resumable = f"; resumes from {ckpt}" if ckpt else ""
    st = read_state(run)
    job = (st or {}).get("slurm_job") or submitted
    if job and job in slurm:
        s = slurm[job].split()[0] if slurm[job] else "UNKNOWN"
        if s == "RUNNING":
            return "running", f"slurm job {job}" + (f", {ckpt}" if ckpt else "")
        if s in SLURM_LIVE:
            return "pending", f"slurm job {job} {s.lower()}{resumable}"
        if st is None or st.get("state") == "running":
            return "failed", f"slurm job {job} {s.lower()}{resumable}"
    if st is not None:
        if st.get("state") == "running":
            if st.get("host") == socket.gethostname() and not st.get("slurm_job"):
                if st.get("pid") and _pid_alive(int(st["pid"])):
                    return "running", f"pid {st['pid']}" + (f", {ckpt}" if ckpt else "")
                return "failed", f"interrupted (attempt {st.get('attempt')}){resumable}"
            where = f"slurm job {job}" if job else f"host {st.get('host')}"
            return "running", f"{where} (not checkable from here)" + (f", {ckpt}" if ckpt else "")
        if st.get("state") == "failed":
            why = st.get("error") or f"exit code {st.get('returncode')}, see {run / LOG_FILE}"
            return "failed", f"{why}{resumable}"
    if submitted:
        return "pending", f"submitted as slurm job {submitted}{resumable}"
    return "pending", resumable.removeprefix("; ")


def _read_jobs(runs_dir: Path) -> dict[str, str]:
    try:
        return json.loads((Path(runs_dir) / SUBMITIT_DIR / JOBS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def sweep_status(runs_dir: Path, games: list[str] | None = None, seeds: list[int] | None = None) -> list[dict]:
    """One row per expected run (manifest games x seeds, plus any other run folder found)."""
    runs_dir = Path(runs_dir)
    manifest = read_manifest(runs_dir) or {}
    games = games or manifest.get("games") or []
    seeds = seeds if seeds is not None else manifest.get("seeds") or []
    keys = [(g, s) for g in games for s in seeds]
    keys += [(g, s) for g, s, _ in run_folders(runs_dir) if (g, s) not in keys]
    jobs = _read_jobs(runs_dir)
    live_ids = [jobs[f"{g}/seed_{s}"] for g, s in keys if f"{g}/seed_{s}" in jobs]
    for g, s in keys:
        st = read_state(run_dir_of(runs_dir, g, s))
        if st and st.get("slurm_job"):
            live_ids.append(st["slurm_job"])
    slurm = slurm_states(runs_dir, sorted(set(live_ids)))
    rows = []
    for g, s in keys:
        state, detail = run_status(run_dir_of(runs_dir, g, s), jobs.get(f"{g}/seed_{s}"), slurm)
        rows.append({"game": g, "seed": s, "state": state, "detail": detail})
    return rows


def print_status(rows: list[dict], runs_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    colours = {"finished": "green", "running": "cyan", "pending": "white", "failed": "red"}
    table = Table(title=f"sweep {runs_dir}")
    for col in ("game", "seed", "state", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["game"], str(r["seed"]), f"[{colours[r['state']]}]{r['state']}[/]", r["detail"])
    console = Console(width=max(120, shutil.get_terminal_size().columns))
    console.print(table)
    counts = {k: sum(r["state"] == k for r in rows) for k in colours}
    console.print(", ".join(f"{n} {k}" for k, n in counts.items()) + f" of {len(rows)} runs")


# ---------------------------------------------------------------------------------------------------- manifest
def read_manifest(runs_dir: Path) -> dict | None:
    path = Path(runs_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SweepError(f"{path} is not valid JSON ({e}); fix or delete it") from None


def update_manifest(runs_dir: Path, config: Path, overrides: list[str], games: list[str], seeds: list[int]) -> dict:
    """RUNS_DIR/sweep.json: which config and overrides the runs use (one folder = one config: a re-run with another
    config or other overrides is refused), and every game and seed asked for so far (status and report expect them)."""
    digest = hashlib.sha256(config.read_bytes()).hexdigest()[:12]
    old = read_manifest(runs_dir)
    if old is not None:
        if old.get("config") != str(config) or old.get("config_sha256") != digest:
            raise SweepError(f"{runs_dir} holds a sweep of {old.get('config')} (sha256 {old.get('config_sha256')}); "
                             f"--config {config} (sha256 {digest}) would mix configs: use another --dir")  # fmt: skip
        if old.get("overrides") != overrides:
            raise SweepError(f"{runs_dir} holds a sweep with fit overrides {old.get('overrides')}; these are "
                             f"{overrides}: repeat the same overrides or use another --dir")  # fmt: skip
        games = list(dict.fromkeys([*old.get("games", []), *games]))
        seeds = sorted(set(old.get("seeds", [])) | set(seeds))
    order = {g: i for i, g in enumerate(ATARI_100K_GAMES)}
    manifest = {"config": str(config), "config_sha256": digest, "overrides": overrides,
                "games": sorted(games, key=order.__getitem__), "seeds": sorted(seeds),
                "created": (old or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(runs_dir) / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


# -------------------------------------------------------------------------------------------------- executors
def detect_gpus() -> list[str]:
    """GPU ids for the local executor: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list (torch is not imported)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def run_local(specs: list[RunSpec], max_parallel: int, gpus: list[str]) -> list[dict]:
    """A bounded pool: at most `max_parallel` fits at once, each pinned to one GPU (CUDA_VISIBLE_DEVICES) when there
    are GPUs; on a CPU the cores are shared out (OMP_NUM_THREADS). Ctrl-C stops every fit (they resume next time)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
    from queue import Queue

    slots: Queue = Queue()
    for i in range(max_parallel):
        slots.put(gpus[i % len(gpus)] if gpus else None)
    threads = max(1, (os.cpu_count() or 1) // max_parallel)

    def job(spec: RunSpec) -> dict:
        gpu = slots.get()
        try:
            env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {"CUDA_VISIBLE_DEVICES": ""}
            if gpu is None and "OMP_NUM_THREADS" not in os.environ:
                env["OMP_NUM_THREADS"] = str(threads)
            t0 = time.time()
            print(f"[sweep] start {spec.key}" + (f" on GPU {gpu}" if gpu is not None else ""), flush=True)
            result = run_fit(spec, env)
            result["seconds"] = time.time() - t0
            return result
        finally:
            slots.put(gpu)

    results: list[dict] = []
    pool = ThreadPoolExecutor(max_workers=max_parallel)
    futures = {pool.submit(job, s): s for s in specs}
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for f in done:
                spec, r = futures[f], f.result()
                results.append({"key": spec.key, **r})
                how = "resumed and finished" if r.get("resumed") and r["state"] == "finished" else r["state"]
                print(f"[sweep] {spec.key}: {how} in {r.get('seconds', 0):.0f} s"
                      + ("" if r["state"] == "finished" else f" (exit {r.get('returncode')}, see "
                         f"{Path(spec.run_dir) / LOG_FILE})"), flush=True)  # fmt: skip
    except KeyboardInterrupt:
        for f in futures:
            f.cancel()
        with _CHILDREN_LOCK:
            for proc in list(_CHILDREN):
                proc.terminate()
        print("[sweep] interrupted: the running fits were stopped; run the same command to resume them",
              file=sys.stderr)  # fmt: skip
        pool.shutdown(wait=True, cancel_futures=True)
        raise SystemExit(130) from None
    pool.shutdown(wait=True)
    return results


def slurm_parameters(args: argparse.Namespace, runs_dir: Path) -> dict:
    """sbatch parameters, in submitit's SlurmExecutor vocabulary (= `_make_sbatch_string`'s arguments)."""
    params = {
        "job_name": args.job_name or f"diamond_{Path(runs_dir).name}",
        "partition": args.partition, "time": args.timeout_min, "nodes": 1, "ntasks_per_node": 1,
        "gpus_per_node": args.gpus_per_node or None, "cpus_per_task": args.cpus_per_task,
        "mem": f"{args.mem_gb}GB" if args.mem_gb else None, "array_parallelism": args.array_parallelism,
        "account": args.account, "qos": args.qos, "constraint": args.constraint, "exclude": args.exclude,
        "signal_delay_s": args.signal_delay_s, "setup": list(args.slurm_setup) or None,
        "stderr_to_stdout": True,
    }  # fmt: skip
    extra = {}
    for item in args.slurm_extra:
        if "=" not in item:
            raise SweepError(f"--slurm-extra {item!r}: give KEY=VALUE (an sbatch option without its --, e.g. "
                             f"mail-type=END)")  # fmt: skip
        k, v = item.split("=", 1)
        extra[k] = v
    if extra:
        params["additional_parameters"] = extra
    return {k: v for k, v in params.items() if v is not None}


def render_sbatch(params: dict, runs_dir: Path, num_jobs: int, python: str | None = None) -> str:
    """The sbatch script submitit writes for the job array (rendered without a cluster)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = Path(runs_dir).resolve() / SUBMITIT_DIR / "%j"
    command = f"{python or sys.executable} -u -m submitit.core._submit {folder}"
    return _make_sbatch_string(command=command, folder=folder, map_count=num_jobs, **params)


def submit(specs: list[RunSpec], params: dict, runs_dir: Path, cluster: str, max_requeues: int) -> list:
    """Submit the runs as one job array. cluster: `slurm`, or submitit's `local` / `debug` executors, which take the
    same job array without a cluster (tests, trying a sweep out)."""
    import submitit

    from diamond_pl.sweep_job import FitJob

    folder = Path(runs_dir).resolve() / SUBMITIT_DIR / "%j"
    if cluster == "slurm":
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
        executor.update_parameters(**params)
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        executor.update_parameters(timeout_min=int(params.get("time", 60)), name=params.get("job_name", "diamond"))
    jobs = executor.map_array(FitJob(), [asdict(s) for s in specs])
    ids = _read_jobs(runs_dir)
    ids.update({s.key: str(j.job_id) for s, j in zip(specs, jobs)})
    atomic_write_bytes(Path(runs_dir) / SUBMITIT_DIR / JOBS_FILE, (json.dumps(ids, indent=1) + "\n").encode())
    return jobs


# --------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m diamond_pl sweep",
        allow_abbrev=False,  # unknown options go to the fit: `--seed` must not be taken for `--seeds`
        description="One `fit` per (game, seed), each in RUNS_DIR/<Game>/seed_<k>/ with seed k, on this machine "
        "(--executor local) or as a SLURM job array through submitit (--executor slurm). Re-running the command "
        "skips finished runs and resumes the others from last.ckpt. Arguments it does not know go to every fit "
        "(e.g. --trainer.precision bf16-mixed).",
        epilog="Then: python -m diamond_pl report RUNS_DIR --out RUNS_DIR/report",
    )
    p.add_argument("--dir", required=True, help="RUNS_DIR, the sweep's folder (created)")
    p.add_argument("--config", help="fit config (e.g. configs/breakout.yaml); not needed with --status")
    p.add_argument("--games", default="all", help="`all` (the 26 Atari-100k games) or a list: Breakout,Pong")
    p.add_argument("--seeds", default="5", help="number of seeds (5 = seeds 0..4) or a list: 0,3 (default 5)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local")
    p.add_argument("--status", action="store_true", help="show pending / running / finished / failed runs and exit")
    p.add_argument("--dry-run", action="store_true", help="print what would run (and the sbatch script) and exit")
    p.add_argument("--python", default=None, help="Python interpreter for the fits (default: the one running the "
                   "job; on a cluster, the submitting interpreter)")  # fmt: skip
    g = p.add_argument_group("local executor")
    g.add_argument("--gpus", default=None, help="GPU ids to use, e.g. 0,1,2,3 (default: all visible; none: CPU)")
    g.add_argument("--max-parallel", type=int, default=None,
                   help="fits at once (default: one per GPU, or 1 on a CPU)")  # fmt: skip
    g = p.add_argument_group("slurm executor (submitit job array)")
    g.add_argument("--partition", default=None)
    g.add_argument("--account", default=None)
    g.add_argument("--qos", default=None)
    g.add_argument("--constraint", default=None, help="e.g. a100")
    g.add_argument("--exclude", default=None, help="nodes to avoid")
    g.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per run (default 1, as the paper)")
    g.add_argument("--cpus-per-task", type=int, default=8)
    g.add_argument("--mem-gb", type=int, default=64, help="host memory per run (the replay data takes ~1.2 GB)")
    g.add_argument("--timeout-min", type=int, default=1440,
                   help="time limit per job in minutes (default 24 h; a run of ~3 GPU-days is requeued and resumed)")
    g.add_argument("--max-requeues", type=int, default=8,
                   help="time-outs after which a run is not requeued again (preemptions do not count; default 8)")
    g.add_argument("--array-parallelism", type=int, default=32, help="array jobs running at once (default 32)")
    g.add_argument("--job-name", default=None)
    g.add_argument("--signal-delay-s", type=int, default=120,
                   help="seconds between submitit's warning signal and the kill (default 120)")  # fmt: skip
    g.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="a shell line run before the job (module load, venv activation); repeatable")  # fmt: skip
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. mail-type=END; repeatable")  # fmt: skip
    g.add_argument("--submitit-cluster", choices=("slurm", "local", "debug"), default="slurm",
                   help="submitit executor taking the job array: slurm, or (without a cluster) local / debug")
    return p


def _resolve(args: argparse.Namespace, overrides: list[str]) -> tuple[Path, Path, list[str], list[int]]:
    runs_dir = Path(args.dir).resolve()
    if not args.config:
        raise SweepError("--config is required to launch a sweep (e.g. --config configs/breakout.yaml)")
    config = Path(args.config).resolve()
    if not config.is_file():
        raise SweepError(f"--config {args.config}: no such file")
    check_overrides(overrides)
    bad = [t for t in overrides if t.startswith("-") and not t.startswith("--")]
    if bad:
        raise SweepError(f"unknown option {bad[0]!r}: fit overrides look like --section.key=value")
    return runs_dir, config, parse_games(args.games), parse_seeds(args.seeds)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    try:
        if args.status:
            rows = sweep_status(Path(args.dir))
            if not rows:
                raise SweepError(f"{args.dir}: no sweep here (no {MANIFEST} and no <Game>/seed_<k> folders)")
            print_status(rows, Path(args.dir))
            return
        runs_dir, config, games, seeds = _resolve(args, overrides)
        if args.max_parallel is not None and args.max_parallel < 1:
            raise SweepError(f"--max-parallel {args.max_parallel}: must be >= 1")
        logger_dirs = config_logger_has_dirs(config)
        specs = [RunSpec(g, s, str(run_dir_of(runs_dir, g, s)), str(config), list(overrides), logger_dirs, args.python)
                 for g in games for s in seeds]  # fmt: skip
        todo = [s for s in specs if not (Path(s.run_dir) / RESULTS_FILE).is_file()]
        print(f"[sweep] {len(specs)} runs ({len(games)} games x {len(seeds)} seeds): {len(specs) - len(todo)} finished "
              f"(skipped), {len(todo)} to run in {runs_dir}")  # fmt: skip
        if args.dry_run:
            for s in todo:
                print(" ".join(fit_command(s, (Path(s.run_dir) / "checkpoints" / "last.ckpt").exists())))
            if args.executor == "slurm" and todo:
                print(render_sbatch(slurm_parameters(args, runs_dir), runs_dir, len(todo), args.python))
            return
        update_manifest(runs_dir, config, list(overrides), games, seeds)
        if not todo:
            print("[sweep] nothing to do: every run has finished. Next: python -m diamond_pl report "
                  f"{runs_dir} --out {runs_dir / 'report'}")  # fmt: skip
            return
        if args.executor == "local":
            gpus = detect_gpus() if args.gpus is None else [g for g in args.gpus.split(",") if g.strip()]
            n = args.max_parallel or max(1, len(gpus))
            results = run_local(todo, n, gpus)
            failed = [r["key"] for r in results if r["state"] != "finished"]
        else:
            todo = _not_live(todo, runs_dir)
            params = slurm_parameters(args, runs_dir)
            try:
                jobs = submit(todo, params, runs_dir, args.submitit_cluster, args.max_requeues)
            except ImportError as e:
                raise SweepError(f"--executor slurm needs submitit ({e}): pip install -e '.[sweep]'") from None
            print(f"[sweep] submitted {len(jobs)} runs as a job array ({args.submitit_cluster}): "
                  f"{jobs[0].job_id.split('_')[0] if jobs else '-'}; follow with: python -m diamond_pl sweep "
                  f"--dir {runs_dir} --status")  # fmt: skip
            failed = []
            if args.submitit_cluster != "slurm":  # local / debug executors: wait here
                for spec, job in zip(todo, jobs):
                    try:
                        job.result()
                    except Exception as e:  # the job's own error (a failed fit); the others go on
                        failed.append(spec.key)
                        print(f"[sweep] {spec.key}: failed ({str(e).strip().splitlines()[-1]})", file=sys.stderr)
        if failed:
            print(f"[sweep] {len(failed)} runs failed: {', '.join(failed)}; see their fit.log, then run the same "
                  "command again to retry them", file=sys.stderr)  # fmt: skip
            raise SystemExit(1)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _not_live(specs: list[RunSpec], runs_dir: Path) -> list[RunSpec]:
    """Leave out runs whose SLURM job is still queued or running (sacct through submitit), or whose last attempt is
    running, so a re-run never submits a run twice."""
    jobs = _read_jobs(runs_dir)
    ids = {s.key: (read_state(Path(s.run_dir)) or {}).get("slurm_job") or jobs.get(s.key) for s in specs}
    slurm = slurm_states(runs_dir, sorted({j for j in ids.values() if j}))
    keep = []
    for spec in specs:
        state, detail = run_status(Path(spec.run_dir), jobs.get(spec.key), slurm)
        live = (slurm.get(ids[spec.key]) or "").split(" ")[0] in SLURM_LIVE
        if state == "running" or live:
            print(f"[sweep] {spec.key}: {state} ({detail}); not submitted again")
            continue
        keep.append(spec)
    return keep
