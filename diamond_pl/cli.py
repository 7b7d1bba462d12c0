"""`python -m diamond_pl <command> ...`: one entry point, one module per command.

Training commands (`fit`, `validate`) go through LightningCLI; the researcher tools are plain argparse programs in
`diamond_pl/tools/`, each exposing `main(argv)`.
"""

from __future__ import annotations

import importlib
import os
import sys

from diamond_pl.errors import DEBUG_ENV, run_command

# command -> (module with main(argv), or "module:function", one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("diamond_pl.train", "train (or resume with --ckpt_path last) from a YAML config, via LightningCLI"),
    "import-diamond": ("diamond_pl.tools.import_diamond", "convert a published DIAMOND agent .pt into a diamond_pl checkpoint"),
    "benchmark": ("diamond_pl.tools.benchmark", "throughput, FLOP utilisation and projected run time of every phase, eager vs fast paths"),
    "evaluate": ("diamond_pl.tools.evaluate", "score a checkpoint on full test games (returns, human-normalised score)"),
    "dream": ("diamond_pl.tools.dream", "imagine a rollout in the world model next to reality, saved as a GIF"),
    "play": ("diamond_pl.tools.play", "play inside the world model or the real game (pygame window)"),
    "sweep": ("diamond_pl.sweep", "one fit per (game, seed) on this machine or as a SLURM job array; --status"),
    "report": ("diamond_pl.report", "rliable aggregates (IQM etc. with CIs) of a sweep vs published DIAMOND/IRIS/Simulus"),
    "import-minari": ("diamond_pl.tools.minari_cmd:main_import", "convert a Minari dataset (images, discrete actions) into a static dataset"),
    "export-minari": ("diamond_pl.tools.minari_cmd:main_export", "write a run's replay store as a Minari dataset"),
    "wm-metrics": ("diamond_pl.tools.wm_metrics", "world-model PSNR/SSIM (1 and K steps) vs copying the last frame, on held-out episodes"),
    "plot": ("diamond_pl.tools.plot", "learning curves (PNG) from the TensorBoard scalars of one or more runs"),
}


def usage() -> str:
    width = max((len(n) for n in COMMANDS), default=0)
    lines = ["usage: python -m diamond_pl <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Run `python -m diamond_pl <command> --help` for a command's options.",
              f"Errors are one line (exit status 2: bad input, 1: the run failed); --debug or {DEBUG_ENV}=1 shows "
              f"the traceback."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--debug" in argv:  # anywhere on the line; an env variable, so DDP ranks and worker processes inherit it
        argv = [a for a in argv if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    from diamond_pl import preflight, quiet  # light: answer typos before torch, Lightning or an emulator loads

    quiet.install()

    try:
        preflight.check(name, rest)
    except preflight.PreflightError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    module_name, _, function = COMMANDS[name][0].partition(":")
    run_command(name, lambda: getattr(importlib.import_module(module_name), function or "main")(rest))
