"""eegfm: EEG foundation models for heterogeneous devices.

Importing the package has no side effects: heavy submodules (torch models, Lightning) load
only when their names are first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "eegfm.models.registry",
    "list_models": "eegfm.models.registry",
    "from_pretrained": "eegfm.checkpoint",
    "run_prep": "eegfm.prep.jobs",
    "run_finetune": "eegfm.training.finetune.runner",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Resolve the lazily imported public names (`create_model`, `list_models`, ...)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eegfm' has no attribute {name!r}")
