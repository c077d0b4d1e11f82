"""The `eegfm` dispatcher: `-v`, and how a command ends on Ctrl-C, a closed pipe or an
unexpected exception; it leaves the machine's settings (OpenMP's wait policy) to the user."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from eegfm import cli


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys) -> None:
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr("eegfm.cli.inspect.main", interrupted)
    assert cli.main(["inspect", "somewhere"]) == 130
    assert capsys.readouterr().err == "eegfm inspect: interrupted\n"


def test_closed_pipe_ends_quietly() -> None:
    """`eegfm inspect | head -1`: no BrokenPipeError traceback when head stops reading."""
    script = ("import sys\nimport eegfm.cli.inspect as inspect\nfrom eegfm import cli\n"
              "inspect.main = lambda argv: print('recording\\n' * 200_000)\n"
              "sys.exit(cli.main(['inspect', 'shards']))\n")
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert writer.stdout.readline() == b"recording\n"
    writer.stdout.close()  # the reader goes away, as head does after one line
    err = writer.stderr.read()
    assert writer.wait(timeout=60) == cli.EXIT_BROKEN_PIPE
    assert b"Traceback" not in err and b"BrokenPipe" not in err and b"Exception" not in err


def _crash(argv: list[str]) -> int:
    raise RuntimeError("shard index\nout of range")


def test_internal_error_is_one_line_and_exit_1(monkeypatch, capsys) -> None:
    monkeypatch.setattr("eegfm.cli.inspect.main", _crash)
    assert cli.main(["inspect", "somewhere"]) == 1
    assert capsys.readouterr().err == (
        "eegfm inspect: internal error: RuntimeError: shard index out of range "
        "(rerun with -v for the traceback)\n")


@pytest.mark.parametrize("argv", [["-v", "inspect", "DIR"], ["--verbose", "inspect", "DIR"],
                                  ["inspect", "DIR", "-v"], ["inspect", "-v", "DIR"]])
def test_verbose_prints_the_traceback(monkeypatch, capsys, argv: list[str]) -> None:
    seen = []

    def crash(rest: list[str]) -> int:
        seen.append(rest)
        return _crash(rest)

    monkeypatch.setattr("eegfm.cli.inspect.main", crash)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "RuntimeError: shard index\nout of range" in err and "internal error" not in err
    assert seen == [["DIR"]], "the command never sees -v"


def test_verbose_after_double_dash_belongs_to_the_command() -> None:
    assert cli.split_verbosity(["predict", "--", "-v"]) == (0, ["predict", "--", "-v"])
    assert cli.split_verbosity(["-v", "prep", "--", "-v"]) == (1, ["prep", "--", "-v"])
    assert cli.split_verbosity(["prep", "-q", "x", "--", "-q"]) == (-1, ["prep", "x", "--", "-q"])
    assert cli.split_verbosity(["-q", "prep", "-v"]) == (1, ["prep"])


def test_expected_errors_keep_their_exit_codes_with_verbose(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as usage:  # argparse: a usage error
        cli.main(["-v", "validate"])
    assert usage.value.code == 2
    assert cli.main(["-v", "frobnicate"]) == 2
    assert cli.main(["-v", "validate", str(tmp_path / "missing"), "--no-progress"]) == 1
    assert cli.main(["-v", "inspect", str(tmp_path / "missing")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_verbose_alone_prints_the_usage(capsys) -> None:
    assert cli.main(["-v"]) == 0
    assert "usage: eegfm [-v | -q] COMMAND" in capsys.readouterr().out


def test_dispatcher_leaves_the_openmp_settings_to_the_user(monkeypatch) -> None:
    """No command samples the machine's load or sets OpenMP wait policy (README.md)."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    for command in ("predict", "validate"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "OMP_WAIT_POLICY" not in os.environ
