"""Shared fixtures: the real recordings in ../shared/eeg and a scratch directory per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two pytest-xdist workers share 2 cores: OpenMP threads that spin while waiting make every torch
# op 10-20x slower under that contention. Set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from eegfm import console  # after the OpenMP setting; imports no torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_EEG = Path(os.environ.get("EEGFM_SHARED_EEG", REPO_ROOT.parent / "shared" / "eeg"))


@pytest.fixture(scope="session")
def shared_eeg() -> Path:
    """Root of the real recordings (../shared/eeg beside the checkout, or $EEGFM_SHARED_EEG)."""
    if not (SHARED_EEG / "MANIFEST.md").is_file():
        pytest.fail(
            f"real test recordings not found at {SHARED_EEG}: put ../shared/eeg beside the "
            "checkout or set EEGFM_SHARED_EEG"
        )
    return SHARED_EEG


@pytest.fixture(scope="session")
def eegmat_dir(shared_eeg: Path) -> Path:
    """The 24-subject eegmat folder (rest vs mental arithmetic, 19-channel 10-20 EDF)."""
    return shared_eeg / "eegmat"


@pytest.fixture(scope="session")
def formats_dir(shared_eeg: Path) -> Path:
    """One file per device/format, each with its naming trap (see MANIFEST.md)."""
    return shared_eeg / "formats"


@pytest.fixture(autouse=True)
def _console_defaults():
    """Each test starts from the library's logging defaults, whatever an earlier `eegfm`
    dispatch in the same worker configured (`-q`, handlers)."""
    yield
    console.reset()
