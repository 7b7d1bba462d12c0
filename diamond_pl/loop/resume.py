"""What makes a run resumable from any moment: the checkpoint is the commit point.

* Every full checkpoint is written atomically (`AtomicCheckpointIO`), so each `*.ckpt` file is complete.
* A run writes `start.ckpt` right after its initial collection (before the first update), each epoch's checkpoint
  (`epoch_N.ckpt`, Lightning's ModelCheckpoint) and, after the final evaluation, `final.ckpt`.
* Data written after the newest checkpoint is uncommitted: a resume cuts the train store back to what the checkpoint
  recorded, and reloads the test-set version it recorded (`EpisodeStore.begin_version`).
* Before the first checkpoint the run folder holds the marker `dataset/NO_CHECKPOINT_YET`: a run killed there has
  nothing to resume, and its next start (with or without `--ckpt_path last`) discards the partial collection.
* `--ckpt_path last` means the newest complete full checkpoint in the checkpoint folder (`newest_checkpoint`),
  whatever the `last.ckpt` link says (Lightning re-links it only after deleting the previous epoch's file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from diamond_pl.atomic import atomic_symlink, atomic_write, remove_temp_files

START_NAME, FINAL_NAME, LAST_NAME = "start.ckpt", "final.ckpt", "last.ckpt"
MARKER = "NO_CHECKPOINT_YET"  # in <run_dir>/dataset while a new run has no checkpoint
MARKER_TEXT = ("This run has no checkpoint yet (its initial collection was running). If it was killed, its next "
               "start discards the episodes collected so far and starts over.\n")


def marker_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "dataset" / MARKER


def write_marker(run_dir: str | os.PathLike) -> None:
    atomic_write(marker_path(run_dir), lambda f: f.write(MARKER_TEXT.encode()))


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    global_step: int
    epoch: int
    finished: bool  # the final evaluation is committed in it

    @property
    def key(self) -> tuple:
        return (self.global_step, self.finished, self.epoch)


def read_info(path: Path) -> CheckpointInfo | None:
    """Epoch and step of a full training checkpoint (tensors memory-mapped, not read), None for anything else."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a torch zip file (or damaged): not a candidate
        return None
    if not isinstance(ckpt, dict) or not {"state_dict", "loops", "callbacks"} <= set(ckpt):
        return None  # weight-only snapshot or foreign file
    finished = any(isinstance(v, dict) and v.get("finished") for k, v in ckpt["callbacks"].items()
                   if str(k).startswith("CollectAndEvaluate"))
    return CheckpointInfo(path, int(ckpt.get("global_step", 0)), int(ckpt.get("epoch", 0)), bool(finished))


def full_checkpoints(dirpath: str | os.PathLike) -> list[CheckpointInfo]:
    """The complete full checkpoints in `dirpath` (links such as last.ckpt excluded), oldest first."""
    dirpath = Path(dirpath)
    if not dirpath.is_dir():
        return []
    found = [read_info(p) for p in sorted(dirpath.glob("*.ckpt")) if p.is_file() and not p.is_symlink()]
    return sorted((i for i in found if i is not None), key=lambda i: i.key)


def newest_checkpoint(dirpath: str | os.PathLike) -> CheckpointInfo | None:
    found = full_checkpoints(dirpath)
    return found[-1] if found else None


def repair_last_link(dirpath: str | os.PathLike, newest: CheckpointInfo) -> None:
    """Point a missing or dangling last.ckpt link at the newest checkpoint (a kill between Lightning's delete of the
    previous epoch's file and its re-link leaves it dangling). A real last.ckpt file is left alone."""
    link = Path(dirpath) / LAST_NAME
    if link.is_symlink() and not link.exists() or not link.exists() and not link.is_symlink():
        atomic_symlink(link, newest.path.name)


def clean_run_folder(run_dir: str | os.PathLike, checkpoint_dirs: list[str | os.PathLike]) -> int:
    """Remove temp files of killed writes (episodes, checkpoints) at every start; returns how many."""
    run_dir = Path(run_dir)
    folders = [Path(d) for d in checkpoint_dirs] + [run_dir / "dataset"]
    for split in ("train", "test"):
        store = run_dir / "dataset" / split
        if store.is_dir():
            folders += [store] + [p for p in store.iterdir() if p.is_dir()]
    return sum(remove_temp_files(f) for f in folders)


def discard_uncommitted_run(run_dir: str | os.PathLike) -> int:
    """Delete the episodes of a run killed before its first checkpoint (the marker says so); returns how many."""
    import shutil

    count = 0
    for split in ("train", "test"):
        store = Path(run_dir) / "dataset" / split
        if store.is_dir():
            count += sum(1 for _ in store.rglob("*.npz"))
            shutil.rmtree(store)
    return count


class AtomicCheckpointIO:
    """Lightning's TorchCheckpointIO with atomic saves (temp file + rename): a checkpoint file is complete or absent."""

    @staticmethod
    def make():
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
        import torch

        class _AtomicTorchCheckpointIO(TorchCheckpointIO):
            def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
                if storage_options is not None:
                    raise TypeError("AtomicCheckpointIO takes no storage_options")
                atomic_write(path, lambda f: torch.save(checkpoint, f))

        return _AtomicTorchCheckpointIO()
