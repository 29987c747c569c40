"""The ``cspineai`` command line: every subcommand is registered, has help, and reports project errors cleanly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cspineai.cli import COMMANDS, build_parser, main


def test_every_listed_subcommand_imports_and_registers():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")  # argparse keeps subparsers here
    assert sorted(subparsers.choices) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: cspineai " + command in capsys.readouterr().out


def test_console_entry_point_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "cspineai", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "COMMAND" in result.stdout


def test_project_errors_print_one_line_and_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.nii.gz: file or folder not found" in err and "Traceback" not in err


def test_run_offers_every_saliency_method_and_defaults_to_the_librarys_choice():
    from cspineai.commands.run import SALIENCY_METHODS
    from cspineai.saliency import DEFAULT_METHOD, METHODS

    assert SALIENCY_METHODS == METHODS and DEFAULT_METHOD in METHODS
    args = build_parser().parse_args(["run", "--t1-sag", "T1.nii.gz", "--out", "out"])
    assert args.saliency_method is None  # the pipeline resolves None to DEFAULT_METHOD
