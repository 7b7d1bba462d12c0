"""SIGTERM / SIGINT (and SIGUSR1 on SLURM): stop at the next safe point, never in the middle of a write.

The first signal only sets a flag (and says so on stderr); the training loop checks it at its safe points (before
each update, after the checkpoint that follows a collection) and raises `Interrupted`. Because the newest complete
checkpoint always resumes the run exactly (see `loop/resume.py`), stopping between two updates loses at most the
current epoch's updates, which the resume redoes identically. A second signal restores the default behaviour, so a
second Ctrl-C stops at once (still resumable, from the same checkpoint).
"""

from __future__ import annotations

import os
import signal
import sys

requested: int | None = None  # the signal received, if any
_installed: dict[int, object] = {}


class Interrupted(Exception):
    """Raised at a safe point after a stop signal; `cli`/`train` turn it into a message and exit 128 + signal."""

    def __init__(self, signum: int, where: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}")
        self.signum, self.where = signum, where
        self.exit_code = 128 + signum


def _handler(signum, frame) -> None:
    global requested
    first = requested is None
    requested = signum
    if first:
        print(f"\n{signal.Signals(signum).name} received: stopping at the next safe point (a second one stops at "
              f"once); the run can then be resumed with --ckpt_path last", file=sys.stderr, flush=True)
        signal.signal(signum, _installed.get(signum, signal.SIG_DFL))  # the second signal acts at once


def install() -> None:
    """Install the handlers (main thread only). SIGUSR1 only under SLURM, where it announces the end of the job's
    time; installing it first keeps Lightning's own SIGUSR1 handler (a mid-epoch checkpoint) from being used."""
    global requested
    requested = None
    signums = [signal.SIGTERM, signal.SIGINT]
    if os.environ.get("SLURM_JOB_ID") and hasattr(signal, "SIGUSR1"):
        signums.append(signal.SIGUSR1)
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread (e.g. fit called from a test thread)
    for s in signums:
        previous = signal.getsignal(s)
        _installed[s] = signal.default_int_handler if s == signal.SIGINT else (
            previous if callable(previous) or previous == signal.SIG_IGN else signal.SIG_DFL)
        signal.signal(s, _handler)


def uninstall() -> None:
    for s, previous in _installed.items():
        signal.signal(s, previous)
    _installed.clear()


def check(where: str) -> None:
    """Raise `Interrupted` if a stop signal arrived (called at safe points)."""
    if requested is not None:
        raise Interrupted(requested, where)


def requeue_on_slurm(signum: int) -> bool:
    """After a SIGUSR1 stop on SLURM, put the job back in the queue (what Lightning's auto-requeue does)."""
    job = os.environ.get("SLURM_JOB_ID")
    if signum != getattr(signal, "SIGUSR1", None) or not job:
        return False
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array and "SLURM_ARRAY_TASK_ID" in os.environ else job
    import subprocess

    try:
        return subprocess.call(["scontrol", "requeue", job]) == 0
    except OSError:
        return False
