"""Test helper: shards of a few eegmat subjects (imported by tests; not a test module)."""

from __future__ import annotations

from pathlib import Path

import pytest


def prep_eegmat_subjects(tmp_path_factory: pytest.TempPathFactory, eegmat_dir: Path,
                         subjects: list[str]) -> Path:
    """Shards of the rest and arithmetic recordings of some eegmat subjects (default prep).

    The files are linked into a folder named `eegmat`, so the dataset name and the filename
    labels are those of the full dataset.
    """
    from eegfm.prep import load_prep_config, run_prep

    folder = tmp_path_factory.mktemp("src") / "eegmat"
    folder.mkdir()
    for subject in subjects:
        for run in (1, 2):
            name = f"Subject{subject}_{run}.edf"
            (folder / name).symlink_to(eegmat_dir / name)
    out = tmp_path_factory.mktemp("shards")
    run_prep([str(folder)], out, load_prep_config(None), progress=False)
    return out
