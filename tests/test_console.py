"""`-v`/`-q` and progress bars: what a command shows besides its result."""

from __future__ import annotations

import io
import logging
import sys

from eegfm import console


def test_levels_follow_the_verbosity(capsys) -> None:
    log = logging.getLogger("eegfm.some.module")
    console.configure(console.NORMAL)
    log.debug("debug line")
    log.info("info line")
    assert capsys.readouterr().err == "info line\n"
    console.configure(console.QUIET)
    log.info("info line")
    log.warning("warning line")
    assert capsys.readouterr().err == "warning line\n"
    console.configure(console.VERBOSE)
    log.debug("debug line")
    assert capsys.readouterr().err == "debug line\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal_and_never_quiet(monkeypatch) -> None:
    redirected = io.StringIO()
    monkeypatch.setattr(sys, "stderr", redirected)
    for _ in console.progress(range(3), desc="work"):
        pass
    assert redirected.getvalue() == "", "no bar frames in a redirected log"
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    list(console.progress(range(3), desc="work", file=terminal))
    assert "work" in terminal.getvalue()
    console.configure(console.QUIET)
    assert not console.show_progress()
    console.configure(console.NORMAL)
    assert console.show_progress() and not console.show_progress(enabled=False)
