"""The `eegfm` dispatcher: the OpenMP wait policy it picks for the torch subcommands."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from eegfm import cli


def test_policy_is_passive_only_when_other_work_holds_the_cores() -> None:
    assert cli.omp_wait_policy(0.0) is None  # idle: the OpenMP runtime's own default
    assert cli.omp_wait_policy(0.3) is None
    assert cli.omp_wait_policy(0.5) == "PASSIVE"
    assert cli.omp_wait_policy(1.7) == "PASSIVE"
    assert cli.omp_wait_policy(None) == "PASSIVE"  # load unknown: the safe choice


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads Linux's /proc/stat")
def test_busy_cores_sees_a_spinning_process() -> None:
    assert 0.0 <= cli.busy_cores() <= os.cpu_count()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        assert cli.busy_cores(0.3) >= 0.7, "one process spinning a whole core"
    finally:
        spinner.kill()
        spinner.wait()


def test_dispatcher_sets_the_policy_for_torch_commands_only(monkeypatch, capsys) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(cli, "busy_cores", lambda: 1.0)
    with pytest.raises(SystemExit):
        cli.main(["validate", "--help"])
    assert "OMP_WAIT_POLICY" not in os.environ
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own setting wins
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys) -> None:
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr("eegfm.prep.cli_inspect.main", interrupted)
    assert cli.main(["inspect", "somewhere"]) == 130
    assert capsys.readouterr().err == "eegfm inspect: interrupted\n"


def test_closed_pipe_ends_quietly() -> None:
    """`eegfm inspect | head -1`: no BrokenPipeError traceback when head stops reading."""
    script = ("import sys\nimport eegfm.prep.cli_inspect as inspect\nfrom eegfm import cli\n"
              "inspect.main = lambda argv: print('recording\\n' * 200_000)\n"
              "sys.exit(cli.main(['inspect', 'shards']))\n")
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert writer.stdout.readline() == b"recording\n"
    writer.stdout.close()  # the reader goes away, as head does after one line
    err = writer.stderr.read()
    assert writer.wait(timeout=60) == cli.EXIT_BROKEN_PIPE
    assert b"Traceback" not in err and b"BrokenPipe" not in err and b"Exception" not in err
