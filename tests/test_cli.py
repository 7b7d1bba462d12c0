"""Every entry point answers --help, and a wrong command is a clear error."""

import subprocess
import sys

import pytest

from diamond_pl.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fitt"])
    assert e.value.code == 2 and "unknown command 'fitt'" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help(command):
    proc = subprocess.run([sys.executable, "-m", "diamond_pl", command, "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower()
