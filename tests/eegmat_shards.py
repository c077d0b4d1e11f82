"""Test helper: shards of a few eegmat subjects (imported by tests; not a test module)."""

from __future__ import annotations

from pathlib import Path

import pytest


def link_files(folder: Path, source_dir: Path, names: list[str]) -> Path:
    """A new folder of symbolic links to the named files of ``source_dir`` (real data, no copy)."""
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).symlink_to(source_dir / name)
    return folder


def prep_eegmat_subjects(tmp_path_factory: pytest.TempPathFactory, eegmat_dir: Path,
                         subjects: list[str]) -> Path:
    """Shards of the rest and arithmetic recordings of some eegmat subjects (default prep).

    The files are linked into a folder named `eegmat`, so the dataset name and the filename
    labels are those of the full dataset.
    """
    from eegfm.prep import load_prep_config, run_prep

    names = [f"Subject{subject}_{run}.edf" for subject in subjects for run in (1, 2)]
    folder = link_files(tmp_path_factory.mktemp("src") / "eegmat", eegmat_dir, names)
    out = tmp_path_factory.mktemp("shards")
    run_prep([str(folder)], out, load_prep_config(None), progress=False)
    return out
