"""One way to report errors, shared by every command (imports nothing heavy, so any module may use it).

* `UsageError` (exit status 2): a bad argument, config value, path or checkpoint. The user fixes the input.
* `RunError` (exit status 1): the run itself failed for a reason the user can act on (disk full, damaged data).
* anything else is a bug in diamond_pl: its traceback is printed (exit status 1).

`run_command` prints a `DiamondError` as one line, `<command>: error: <message>`, without a traceback; with
`--debug` on the command line (stripped by `cli.main`) or `DIAMOND_PL_DEBUG=1` it re-raises, traceback and all.
Messages name the offending value and the fix.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable

DEBUG_ENV = "DIAMOND_PL_DEBUG"
USAGE_EXIT, RUNTIME_EXIT = 2, 1


class DiamondError(Exception):
    """An error whose message is complete for the user; `exit_code` says which kind."""

    exit_code = RUNTIME_EXIT


class UsageError(DiamondError):
    """A wrong input (argument, config value, path, checkpoint): exit status 2."""

    exit_code = USAGE_EXIT


class ConfigError(UsageError, ValueError):
    """A configuration value out of range or inconsistent with another (also a ValueError for library callers)."""


class RunError(DiamondError):
    """The run failed for a reason outside the code (disk full, damaged data): exit status 1."""


class DiskFullError(RunError, OSError):
    pass


def disk_full(path: object, e: OSError) -> DiskFullError:
    return DiskFullError(
        f"disk full while writing {path} ({e.strerror or e}): free space on that disk, then continue the run with "
        f"--ckpt_path last (nothing written after the last checkpoint is used)"
    )


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors of other modules that carry a complete user-facing message (looked up lazily: no heavy imports)."""
    types: list[type[BaseException]] = [DiamondError]
    for module, name in (("diamond_pl.games", "UnknownGameError"),
                         ("lightning.fabric.utilities.exceptions", "MisconfigurationException")):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, name):
            types.append(getattr(mod, name))
    return tuple(types)


def exit_code_of(e: BaseException) -> int:
    return getattr(e, "exit_code", USAGE_EXIT if not isinstance(e, DiamondError) else RUNTIME_EXIT)


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def run_command(command: str, fn: Callable[[], object]) -> None:
    """Run a command's body; a user error becomes one line on stderr and its exit status (see module docstring)."""
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - sorted below; everything else is re-raised untouched
        if debug_enabled():
            raise
        if isinstance(e, OSError) and e.errno == errno.ENOSPC and not isinstance(e, DiamondError):
            e = disk_full(getattr(e, "filename", None) or "a file", e)
        if not isinstance(e, _user_error_types()):
            raise
        print(f"{command}: error: {one_line(str(e))}", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(exit_code_of(e)) from None
