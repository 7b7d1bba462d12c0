"""`<run_dir>/results.json`: the small summary a finished run leaves behind, for `sweep` and `report`.

Written once, atomically, at the end of the final evaluation (`CollectAndEvaluate.on_train_end`): its presence is
what marks a sweep run as finished, so a half-written file must never exist. JSON only (no pickle).

Fields: game, seed, config_hash (of the resolved config without per-run fields: seeds, paths, game, logger), the final
evaluation's per-episode returns and their mean, the human-normalised score (null for a game outside Atari 100k),
real env steps, wall time of the process that finished the run (a resumed run counts only its last attempt; see
`resumed`), and the run folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

from diamond_pl.atomic import atomic_write_bytes

RESULTS_FILE = "results.json"
RESULTS_VERSION = 1



def _process_start() -> float:
    """When this process started (Linux: /proc, so the imports count too); elsewhere when this module was imported
    (at `fit`'s start, before the trainer runs)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))  # fmt: skip
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


_PROCESS_START = _process_start()

# Config entries that differ between runs of one sweep without changing the method: left out of the config hash so
# that every run of a sweep shares one hash (and a report can tell when runs come from different configs).
_PER_RUN_KEYS = (
    ("seed_everything",), ("ckpt_path",), ("config",), ("print_config",),
    ("data", "run_dir"), ("data", "game"), ("data", "env_id"), ("data", "seed"), ("model", "game"), ("loop", "seed"),
    ("model", "env", "game"), ("model", "env", "env_id"),  # model.env is linked from data.game / data.env_id
    ("checkpoint", "dirpath"), ("snapshot", "dirpath"),
    ("trainer", "logger"), ("trainer", "default_root_dir"), ("trainer", "enable_progress_bar"),
)  # fmt: skip


def results_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RESULTS_FILE


def config_hash(config: dict) -> str:
    """sha256 (first 12 hex digits) of the resolved config, per-run entries removed."""
    cfg = json.loads(json.dumps(config, default=str))  # a deep copy in plain JSON types
    for path in _PER_RUN_KEYS:
        node = cfg
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _resolved_config(trainer, pl_module) -> dict:
    """The config LightningCLI resolved for this fit (its SaveConfigCallback holds it); outside the CLI the
    LightningModule's and DataModule's hyperparameters."""
    from lightning.pytorch.cli import SaveConfigCallback

    for cb in trainer.callbacks:
        if isinstance(cb, SaveConfigCallback):
            return cb.config.as_dict()
    dm = trainer.datamodule
    return {"model": dict(getattr(pl_module, "hparams", {})), "data": dict(getattr(dm, "hparams", {}))}


def human_normalised_or_none(game: str, score: float) -> float | None:
    from diamond_pl.games import UnknownGameError, human_normalised_score

    try:
        return human_normalised_score(game, score)
    except UnknownGameError:
        return None


def _normalised(pl_module, game: str, mean: float) -> float | None:
    """Human-normalised score for an Atari-100k game, None for any other env (no human reference)."""
    spec = getattr(pl_module, "env_spec", None)
    if spec is not None and hasattr(spec, "normalised_score"):
        return spec.normalised_score(mean)
    return human_normalised_or_none(game, mean)


def write_final_results(trainer, pl_module, seed: int | None, epochs: int | None = None) -> Path:
    """Write `<run_dir>/results.json` from the final evaluation's episodes (the test store holds exactly them: it
    is a new version for each evaluation and keeps finished episodes only)."""
    dm = trainer.datamodule
    store = dm.test_store
    returns = [store.get(i).ret for i in range(len(store))]
    mean = sum(returns) / len(returns) if returns else None
    game = str(pl_module.game)
    results = {
        "version": RESULTS_VERSION,
        "game": game,
        "seed": seed,
        "config_hash": config_hash(_resolved_config(trainer, pl_module)),
        "returns": returns,
        "num_episodes": len(returns),
        "mean": mean,
        "human_normalised_score": None if mean is None else _normalised(pl_module, game, mean),
        "env_steps": pl_module.real_env_steps(int(dm.train_store.num_steps)),
        "epochs": int(trainer.current_epoch if epochs is None else epochs),  # a resume before the loops are restored
        "wall_time_s": round(time.time() - _PROCESS_START, 1),
        "resumed": trainer.ckpt_path is not None,
        "host": socket.gethostname(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(Path(dm.run_dir).resolve()),
    }
    path = results_path(dm.run_dir)
    atomic_write_bytes(path, (json.dumps(results, indent=1) + "\n").encode())
    return path


def read_results(run_dir: str | Path) -> dict | None:
    """The run's results, or None when it has not finished (no file). A corrupt file raises ValueError."""
    path = results_path(run_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to re-run the final evaluation") from e
