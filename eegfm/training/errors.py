"""Errors of the training commands that are the user's to fix.

Imports nothing from eegfm, so any module (the window index in `eegfm.data` included) can raise
them without an import loop.
"""

from __future__ import annotations


class PretrainConfigError(ValueError):
    """A pretraining option the data or the model rejects, found once they meet inside `fit`.

    `eegfm pretrain` reports it in one line with exit status 2, as it does for options rejected
    when the command is built; any other exception inside `fit` is a bug (an internal error).
    """
