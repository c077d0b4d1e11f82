"""Real eegmat task windows for the alignment and classical-baseline tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from eegmat_shards import prep_eegmat_subjects

from eegfm.data.tasks import TaskConfig, TaskSet, build_task_set

TASK = TaskConfig(name="eegmat", pattern=r"Subject(?P<subject>\d+)_(?P<label>[12])",
                  classes={"1": "rest", "2": "arithmetic"}, window_s=4.0, stride_s=4.0)


@pytest.fixture(scope="package")
def eegmat_windows(tmp_path_factory, eegmat_dir: Path) -> TaskSet:
    """4 s windows of eegmat subjects 00-05 (rest and arithmetic), 19 channels at 200 Hz."""
    shards = prep_eegmat_subjects(tmp_path_factory, eegmat_dir,
                                  ["00", "01", "02", "03", "04", "05"])
    return build_task_set(TASK, shards, multiple_of=200, progress=False)
