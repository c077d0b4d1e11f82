"""What a command shows besides its result: log messages on stderr and progress bars.

stdout carries a command's result (tables, JSON, written paths); everything else goes through
``logging`` under the ``eegfm`` logger on stderr. ``eegfm -q`` keeps warnings and errors only
and draws no progress bar; ``eegfm -v`` adds debug messages (and tracebacks). Progress bars are
drawn only on a terminal, so redirected logs hold no bar frames.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

LOGGER = "eegfm"
QUIET, NORMAL, VERBOSE = -1, 0, 1
_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}
_verbosity = NORMAL
T = TypeVar("T")


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted."""

    # bound at emit time, so a replaced stderr (a test's capture, a redirect) is honoured
    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(verbosity: int = NORMAL) -> None:
    """Send ``eegfm`` log records to stderr as bare lines at the level of ``verbosity``."""
    global _verbosity
    _verbosity = verbosity
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [handler]
    logger.setLevel(_LEVELS[verbosity])
    logger.propagate = False  # a host application's root handlers would print it twice


def reset() -> None:
    """Undo :func:`configure`: the library's default (no handler of its own, records propagate)."""
    global _verbosity
    _verbosity = NORMAL
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = []
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def quiet() -> bool:
    """Whether ``-q`` was given (no progress bars, warnings and errors only)."""
    return _verbosity == QUIET


def show_progress(enabled: bool = True) -> bool:
    """Whether a progress bar may be drawn: asked for, not quiet, and stderr is a terminal."""
    return enabled and not quiet() and sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, enabled: bool = True,
             **options: Any) -> tqdm:
    """A tqdm bar on stderr that draws only where :func:`show_progress` allows."""
    return tqdm(iterable, disable=not show_progress(enabled), dynamic_ncols=True, **options)
