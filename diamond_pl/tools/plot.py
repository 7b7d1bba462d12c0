"""`python -m diamond_pl plot RUN_DIR [RUN_DIR ...] --out DIR`: learning curves as PNG from a run's TensorBoard scalars.

Reads every TensorBoard event file under each RUN_DIR (a run folder, or its `version_N` log folder) with TensorBoard's
public `EventAccumulator`, and draws one PNG per panel into `--out`, every run overlaid (named by its folder; runs
given as `NAME=DIR` are named NAME). The x axis is real env steps where the run logged them (`env_steps`, mapped onto
the optimiser step every scalar is logged at), else the optimiser step.

Panels (a panel is skipped when no run has its scalars):
  returns        test/return_mean, final/return_mean (last point), train_dataset/return (collected episodes)
  world_model    denoiser/test/world_model/{model,copy}_psnr_{1step,<K>step}: the world model vs copying the last frame
  losses         denoising loss, reward/end loss, value loss (log scale)
  actor_critic   policy entropy (bits), imagined reward per step and end rate

`--scalars TAG [TAG ...]` draws those tags instead, one panel each; `--list` prints every scalar tag of the runs;
`--json FILE` writes the last value of every scalar of every run (what docs/learning.md's tables are made from).
Needs matplotlib (`pip install -e ".[plot]"`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

COMMAND = "plot"

PANELS: dict[str, tuple[str, list[str], bool]] = {  # name -> (title, tag regexes, log scale)
    "returns": ("Return (real env)", [r"^test/return_mean$", r"^final/return_mean$", r"^train_dataset/return$"], False),
    "world_model": ("World model: PSNR vs copying the last frame (held-out episodes)",
                    [r"^denoiser/test/world_model/(model|copy)_psnr_\d+step$"], False),
    "losses": ("Training losses", [r"^denoiser/train/loss_denoising$", r"^rew_end_model/train/loss_total$",
                                   r"^actor_critic/train/loss_values$"], True),
    "actor_critic": ("Actor-critic in imagination", [r"^actor_critic/train/(policy_entropy|imagined_end_rate|"
                                                     r"imagined_reward_mean)$"], False),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m diamond_pl {COMMAND}",
                                description="Learning curves (PNG) from the TensorBoard scalars of one or more runs.")
    p.add_argument("runs", nargs="+", help="run folders (or NAME=DIR); every event file below each is read")
    p.add_argument("--out", type=Path, default=Path("plots"), help="folder for the PNG files (default: plots)")
    p.add_argument("--scalars", nargs="+", default=None, help="plot these tags (one panel each) instead of the defaults")
    p.add_argument("--list", action="store_true", help="print the scalar tags of the runs and exit")
    p.add_argument("--json", type=Path, default=None, help="write every scalar's last value per run to this file")
    p.add_argument("--dpi", type=int, default=80)
    return p


def read_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar tag under `run_dir` -> (steps, values), merged over event files and sorted by step (for a tag
    logged twice at one step, e.g. by a resumed run, the later file's value wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.rglob("events.out.tfevents.*"), key=lambda f: f.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {run_dir}")
    merged: dict[str, dict[int, float]] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})  # 0: keep every point
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            points = merged.setdefault(tag, {})
            for e in acc.Scalars(tag):
                points[int(e.step)] = float(e.value)
    return {t: (np.array(sorted(p)), np.array([p[s] for s in sorted(p)])) for t, p in merged.items()}


def env_step_axis(scalars: dict) -> tuple[str, callable]:
    """x-axis label and a function optimiser step -> x (real env steps, piecewise constant, where logged)."""
    if "env_steps" not in scalars:
        return "optimiser step", lambda s: s
    steps, env = scalars["env_steps"]

    def to_env(s):
        i = np.searchsorted(steps, s, side="right") - 1  # the env steps collected before that optimiser step
        return np.where(i >= 0, env[np.clip(i, 0, None)], 0.0)

    return "real env steps", to_env


def parse_runs(specs: list[str]) -> list[tuple[str, Path]]:
    runs = []
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(path)
        if not path.is_dir():
            raise SystemExit(f"{COMMAND}: error: {path} is not a folder")
        runs.append((name or path.resolve().name, path))
    return runs


def draw(runs: dict[str, dict], panels: dict, out: Path, dpi: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for name, (title, patterns, log) in panels.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        drawn, xlabel = 0, "optimiser step"
        for r, (run, scalars) in enumerate(runs.items()):
            xlabel, to_x = env_step_axis(scalars)
            tags = sorted(t for t in scalars if any(re.search(p, t) for p in patterns))
            for k, tag in enumerate(tags):
                steps, values = scalars[tag]
                label = tag if len(runs) == 1 else f"{run}: {tag}"
                style = "--" if "/copy_" in tag else ["-", ":", "-."][k % 3] if len(runs) > 1 else "-"
                colour = colours[(r if len(runs) > 1 else k) % len(colours)]
                marker = "o" if len(steps) <= 3 else None
                ax.plot(to_x(steps), values, style, color=colour, marker=marker, label=label, lw=1.2)
                drawn += 1
        if drawn:
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6 if drawn > 6 else 8)
            fig.tight_layout()
            path = out / f"{name}.png"
            fig.savefig(path, dpi=dpi)
            written.append(path)
        plt.close(fig)
    return written


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    runs = {}
    for name, path in parse_runs(args.runs):
        try:
            runs[name] = read_scalars(path)
        except FileNotFoundError as e:
            raise SystemExit(f"{COMMAND}: error: {e}") from None
    if args.list:
        for name, scalars in runs.items():
            print(f"{name}:")
            for tag, (steps, _) in sorted(scalars.items()):
                print(f"  {tag}  ({len(steps)} points)")
        return
    if args.json is not None:
        last = {name: {t: float(v[-1]) for t, (_, v) in sorted(s.items())} for name, s in runs.items()}
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(last, indent=1))
        except OSError as e:
            raise SystemExit(f"{COMMAND}: error: cannot write --json {args.json}: {e.strerror or e}") from None
        print(f"wrote {args.json}")
    panels = PANELS if args.scalars is None else {
        re.sub(r"[^A-Za-z0-9_.-]+", "_", t): (t, [f"^{re.escape(t)}$"], False) for t in args.scalars}
    try:
        written = draw(runs, panels, args.out, args.dpi)
    except ImportError:
        raise SystemExit(f"{COMMAND}: error: matplotlib is needed: pip install -e \".[plot]\"") from None
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("no scalars of the chosen panels in these runs (see --list)", file=sys.stderr)
