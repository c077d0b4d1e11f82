"""BIDS at prep: task, run, session, acquisition and participants.tsv kept, usable as labels."""

from __future__ import annotations

import csv
from pathlib import Path

import mne
import mne_bids
import numpy as np

from eegfm.data.tasks import TaskConfig, build_task_set
from eegfm.prep import run_prep
from eegfm.prep.sources import bids_participant
from eegfm.shards import read_manifest, to_braindecode

SUBJECTS = ["00", "01"]


def _count_quality(eegmat_dir: Path) -> dict[str, str]:
    """eegmat's own 'Count quality' per subject (1 good, 0 bad counter), from subject-info.csv."""
    with open(eegmat_dir / "subject-info.csv", encoding="utf-8", newline="") as handle:
        return {row["Subject"].removeprefix("Subject"): row["Count quality"]
                for row in csv.DictReader(handle)}


def _bids_root(root: Path, eegmat_dir: Path) -> Path:
    """Two eegmat subjects (20 s each) as BIDS, participants.tsv with a count_quality column."""
    for subject in SUBJECTS:
        raw = mne.io.read_raw_edf(eegmat_dir / f"Subject{subject}_2.edf", preload=True,
                                  verbose="error")
        raw.crop(0, 20, include_tmax=False)
        path = mne_bids.BIDSPath(subject=subject, session="01", task="arith", acquisition="clin",
                                 run=2, root=root, datatype="eeg")
        mne_bids.write_raw_bids(raw, path, allow_preload=True, format="EDF", verbose=False)
    quality = _count_quality(eegmat_dir)
    table = root / "participants.tsv"
    with open(table, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    with open(table, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, [*rows[0], "count_quality"], delimiter="\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows({**row, "count_quality": quality[row["participant_id"][4:]]}
                         for row in rows)
    return root


def test_bids_entities_and_participants_reach_the_manifest_and_labels(
    tmp_path: Path, eegmat_dir: Path, config
):
    root = _bids_root(tmp_path / "arith", eegmat_dir)
    out = tmp_path / "shards"
    run_prep([str(root)], out, config, progress=False)
    entries = {e.subject: e for e in read_manifest(out)}
    assert sorted(entries) == SUBJECTS
    quality = _count_quality(eegmat_dir)
    for subject, entry in entries.items():
        assert entry.recording_id == f"arith__sub-{subject}_ses-01_task-arith_acq-clin_run-2_eeg"
        assert (entry.session, entry.run, entry.task, entry.acquisition) == (
            "01", "2", "arith", "clin")
        assert entry.participant["count_quality"] == int(quality[subject])
        assert isinstance(entry.participant["age"], int)  # numbers stay numbers
        assert entry.participant["hand"] is None  # 'n/a'
        assert "participant_id" not in entry.participant
    assert {e.participant["count_quality"] for e in entries.values()} == {0, 1}

    by_quality = build_task_set(
        TaskConfig(label_from="manifest", field="participant.count_quality",
                   classes={0: "bad", 1: "good"}),
        out, multiple_of=200, progress=False)
    assert len(by_quality) == 10  # 20 s / 4-s windows, two recordings
    for subject in SUBJECTS:
        rows = by_quality.subject == subject
        assert set(by_quality.y[rows]) == {int(quality[subject])}
    by_task = build_task_set(
        TaskConfig(label_from="manifest", field="task", classes={"arith": "arith", "x": "x"}),
        out, multiple_of=200, progress=False)
    assert (np.array(by_task.class_names)[by_task.y] == "arith").all()

    described = to_braindecode(out).description.set_index("subject")
    assert described.loc["00", "task"] == "arith" and described.loc["01", "acquisition"] == "clin"
    assert described["count_quality"].tolist() == [int(quality[s]) for s in SUBJECTS]
    assert bids_participant(root, "99") == {} and bids_participant(tmp_path, "00") == {}
