"""Atomic file writes: a crash (or SIGKILL) never leaves a half-written episode, checkpoint or result file.

The data goes to a hidden temp file in the target's folder, is flushed to disk, then renamed over the target
(`os.replace` is atomic on POSIX); the folder is synced so the rename itself survives a power cut.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from diamond_pl.errors import disk_full

TEMP_GLOB = ".*.tmp"  # what atomic_write leaves behind when the process is killed mid-write


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(f)` on a temp file, then rename it to `path`. Temp names are `.<name>.XXXX.tmp`."""
    path = Path(path)
    try:
        _atomic_write(path, write)
    except OSError as e:
        if e.errno == errno.ENOSPC:  # one clear line instead of a raw OSError; the run stays resumable
            raise disk_full(path, e) from e
        raise


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private (0600); give it a normal file's mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def remove_temp_files(folder: str | os.PathLike) -> int:
    """Delete the temp files that killed atomic writes left in `folder`; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.glob(TEMP_GLOB) if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def atomic_symlink(link: str | os.PathLike, target: str) -> None:
    """Point `link` at `target` (relative to the link's folder) in one rename: readers never see it missing."""
    link = Path(link)
    tmp = link.parent / f".{link.name}.link.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support syncing a directory
    finally:
        os.close(fd)
