"""Fixtures of the prep tests: a few short eegmat recordings and crafted bad inputs."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest

from eegfm.prep.config import load_prep_config

SHORT = ["Subject00_2.edf", "Subject01_2.edf", "Subject02_2.edf"]  # 62 s each


@pytest.fixture(autouse=True)
def _quiet_mne():
    mne.set_log_level("ERROR")


@pytest.fixture
def config():
    """Defaults, except the tiny-shard knobs the tests need are left to each test."""
    return load_prep_config(None)


@pytest.fixture
def short_eegmat(tmp_path: Path, eegmat_dir: Path) -> Path:
    """A folder `eegmat/` holding links to three 62-s eegmat recordings."""
    folder = tmp_path / "eegmat"
    folder.mkdir()
    for name in SHORT:
        (folder / name).symlink_to(eegmat_dir / name)
    return folder


def eegmat_raw(eegmat_dir: Path, name: str = "Subject00_2.edf") -> mne.io.BaseRaw:
    """A real eegmat recording, loaded."""
    return mne.io.read_raw_edf(eegmat_dir / name, preload=True, verbose="error")


@pytest.fixture
def real_raw(eegmat_dir: Path) -> mne.io.BaseRaw:
    """eegmat Subject00_2 (62 s, 21 EEG-typed signals at 500 Hz), loaded."""
    return eegmat_raw(eegmat_dir)


def write_fif(raw: mne.io.BaseRaw, path: Path) -> Path:
    """Save a raw as FIF (keeps NaN, which EDF cannot hold)."""
    raw.save(path, overwrite=True, verbose="error")
    return path


@pytest.fixture
def bad_inputs(tmp_path: Path, eegmat_dir: Path) -> dict[str, Path]:
    """Files crafted from a real recording: empty, truncated, text, NaN channel, flat channel."""
    folder = tmp_path / "bad"
    folder.mkdir()
    original = (eegmat_dir / "Subject03_2.edf").read_bytes()
    paths = {
        "zero": folder / "zero.edf",
        "truncated": folder / "truncated.edf",
        "text": folder / "text.edf",
    }
    paths["zero"].write_bytes(b"")
    paths["truncated"].write_bytes(original[: len(original) * 6 // 10])
    paths["text"].write_text("this is a text file, not an EDF recording\n" * 40)
    raw = eegmat_raw(eegmat_dir, "Subject04_2.edf")
    raw.crop(0, 20)
    data = raw.get_data()
    data[2, 1000:1010] = np.nan  # channel 'EEG F3'
    paths["nan"] = write_fif(
        mne.io.RawArray(data, raw.info, verbose="error"), folder / "nan_raw.fif"
    )
    data = raw.get_data()
    data[5] = 0.0  # channel 'EEG F8' flat
    paths["flat"] = write_fif(
        mne.io.RawArray(data, raw.info, verbose="error"), folder / "flat_raw.fif"
    )
    return paths
