"""`python -m diamond_pl import-minari DATASET --out DIR` and `export-minari RUN --out ROOT --dataset_id ID`.

import-minari: a Minari dataset with image observations and discrete actions becomes a static dataset
(`DIR/train`, `DIR/test`) to train a world model on with `fit ... --data.static_dataset DIR`.
export-minari: a run's replay store (`RUN/dataset/train`, or any store folder) becomes the Minari dataset `ID` under
`ROOT` (read it with `MINARI_DATASETS_PATH=ROOT python -c "import minari; minari.load_dataset('ID')"`).
Formats and the one lossy case (the last step of an unfinished episode) in `data/minari_io.py`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diamond_pl.tools.common import ToolError, run_tool


def import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m diamond_pl import-minari",
                                description="Convert a Minari dataset into a diamond_pl static dataset.")
    p.add_argument("dataset", type=Path, help="the Minari dataset folder (holding data/metadata.json)")
    p.add_argument("--out", type=Path, required=True, help="new folder for train/ and test/")
    p.add_argument("--img_size", "--img-size", type=int, default=64, help="frame side after resizing (default 64)")
    p.add_argument("--test_episodes", "--test-episodes", type=int, default=None,
                   help="last episodes that form the test set (default: 10%%)")
    p.add_argument("--obs_key", "--obs-key", default=None, help="the image entry of dict observations")
    return p


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m diamond_pl export-minari",
                                description="Write a run's replay store as a Minari dataset.")
    p.add_argument("run", type=Path, help="a run folder (its dataset/<split>) or a store folder of episode files")
    p.add_argument("--out", type=Path, required=True, help="Minari datasets root to write into")
    p.add_argument("--dataset_id", "--dataset-id", required=True, help="e.g. breakout/diamond-replay-v0")
    p.add_argument("--split", choices=("train", "test"), default="train", help="with a run folder (default: train)")
    p.add_argument("--num_actions", "--num-actions", type=int, default=None,
                   help="size of the action space (default: from the run's checkpoints/last.ckpt)")
    return p


def _num_actions(run: Path) -> int:
    import torch

    ckpt = run / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise ToolError(f"{run}: no checkpoints/last.ckpt to read the action count from; pass --num_actions")
    hparams = torch.load(ckpt, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    n = (hparams.get("actor_critic") or {}).get("num_actions")
    if n is None:
        raise ToolError(f"{ckpt}: holds no action count; pass --num_actions")
    return int(n)


def run_import(args: argparse.Namespace) -> dict:
    from diamond_pl.data.minari_io import MinariError, import_minari

    try:
        summary = import_minari(args.dataset, args.out, args.img_size, args.test_episodes, args.obs_key)
    except MinariError as e:
        raise ToolError(str(e)) from None
    print(f"{args.dataset} -> {args.out}: " + ", ".join(f"{k} {v['episodes']} episodes / {v['steps']} steps"
                                                       for k, v in summary.items()))
    print(f"train a world model on it: python -m diamond_pl fit --config CONFIG --data.static_dataset {args.out}")
    return summary


def run_export(args: argparse.Namespace) -> dict:
    from diamond_pl.data.minari_io import MinariError, export_minari

    run = args.run
    store = run / "dataset" / args.split if (run / "dataset").is_dir() else run
    if not store.is_dir():
        raise ToolError(f"{run}: no such folder")
    num_actions = args.num_actions if args.num_actions is not None else _num_actions(run)
    try:
        summary = export_minari(store, args.out, args.dataset_id, num_actions)
    except MinariError as e:
        raise ToolError(str(e)) from None
    except ValueError as e:  # minari: the id exists already, or is malformed
        raise ToolError(f"--dataset_id {args.dataset_id}: {e}") from None
    note = (f" ({summary['unfinished_last_steps_dropped']} unfinished episode(s) lose their last step: Minari needs "
            f"the observation after every action)" if summary["unfinished_last_steps_dropped"] else "")
    print(f"{store} -> {summary['path']}: {summary['episodes']} episodes{note}")
    return summary


def main_import(argv: list[str] | None = None) -> None:
    args = import_parser().parse_args(argv)
    run_tool("import-minari", lambda: run_import(args))


def main_export(argv: list[str] | None = None) -> None:
    args = export_parser().parse_args(argv)
    run_tool("export-minari", lambda: run_export(args))


if __name__ == "__main__":
    main_import(sys.argv[1:])
