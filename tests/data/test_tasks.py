"""Task windows from real shards: labels per recording (file name, manifest, CSV), epochs around
events with rejection, and a MOABB task through the prep pipeline (FakeDataset, offline)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mne
import numpy as np
import pytest
from eegmat_shards import prep_eegmat_subjects

from eegfm.config import ConfigError
from eegfm.data.tasks import TaskConfig, build_task_set
from eegfm.data.tasks.windows import TaskDataError, window_samples
from eegfm.evaluation import time_blocks
from eegfm.prep import load_prep_config, process_raw
from eegfm.shards import ShardReader, ShardWriter, events_frame

SUBJECTS = ["00", "01", "02"]
PATTERN = r"Subject(?P<subject>\d+)_(?P<label>[12])"
EEGMAT = TaskConfig(name="eegmat", pattern=PATTERN, classes={1: "rest", 2: "arithmetic"},
                    window_s=4.0)


@pytest.fixture(scope="module")
def eegmat_shards(tmp_path_factory, eegmat_dir: Path) -> Path:
    """Shards of eegmat subjects 00-02 (rest + arithmetic recordings)."""
    return prep_eegmat_subjects(tmp_path_factory, eegmat_dir, SUBJECTS)


def test_filename_labels_cut_fixed_windows(eegmat_shards: Path):
    task = build_task_set(EEGMAT, eegmat_shards, multiple_of=200, sfreq=200.0, progress=False)
    reader = ShardReader(eegmat_shards)
    assert task.class_names == ["rest", "arithmetic"]
    assert sorted(set(task.subject.tolist())) == SUBJECTS
    expected = sum(e.n_samples // 800 for e in reader.entries)
    assert len(task) == expected and task.x.shape[1:] == (19, 800)
    for entry in reader.entries:  # each recording: one class, windows every 4 s from 0
        rows = np.flatnonzero(task.recording_id == entry.recording_id)
        assert set(task.y[rows]) == {0 if entry.source.endswith("_1.edf") else 1}
        assert np.array_equal(np.sort(task.start[rows]), np.arange(len(rows)) * 800)
    row = int(np.flatnonzero(task.start == 1600)[0])
    window = reader.read_window(task.recording_id[row], 1600, 800)
    np.testing.assert_array_equal(task.x[row], window.data)
    np.testing.assert_array_equal(task.coords[row], window.coords)
    assert task.channel_mask.all() and np.isfinite(task.coords).all()
    assert task.common_channels() == list(window.ch_names)
    groups = time_blocks(task.recording_id, task.start, 3)
    assert len(set(groups.tolist())) == 3 * len(reader.entries)


def test_csv_and_manifest_labels_match_file_names(eegmat_shards: Path, tmp_path: Path):
    reference = build_task_set(EEGMAT, eegmat_shards, multiple_of=200, progress=False)
    table = tmp_path / "labels.csv"
    lines = ["recording,label,subject"] + [
        f"Subject{s}_{run}.edf,{'rest' if run == 1 else 'arithmetic'},{s}"
        for s in SUBJECTS for run in (1, 2)]
    table.write_text("\n".join(lines) + "\n")
    by_csv = build_task_set(
        TaskConfig(label_from="csv", csv=str(table), classes={"rest": "rest",
                                                              "arithmetic": "arithmetic"}),
        eegmat_shards, multiple_of=200, progress=False)
    by_run = build_task_set(
        TaskConfig(label_from="manifest", field="run", classes={1: "rest", 2: "arithmetic"}),
        eegmat_shards, multiple_of=200, progress=False)
    for other in (by_csv, by_run):
        order = np.lexsort((other.start, other.recording_id))
        ref_order = np.lexsort((reference.start, reference.recording_id))
        np.testing.assert_array_equal(other.y[order], reference.y[ref_order])
        np.testing.assert_array_equal(other.subject[order], reference.subject[ref_order])


def test_windows_crop_to_whole_patches_and_bad_configs_name_the_key(eegmat_shards: Path):
    assert window_samples(4.3, 200.0, multiple_of=200) == 800
    with pytest.raises(TaskDataError, match="patch length"):
        window_samples(0.5, 200.0, multiple_of=200)
    with pytest.raises(ConfigError, match="label"):
        TaskConfig(pattern=r"Subject(\d+)")
    with pytest.raises(TaskDataError, match="no recording got a label"):
        build_task_set(TaskConfig(pattern=r"nothing(?P<label>x)"), eegmat_shards,
                       progress=False)
    with pytest.raises(TaskDataError, match="the model expects 250"):
        build_task_set(EEGMAT, eegmat_shards, sfreq=250.0, progress=False)


@pytest.fixture(scope="module")
def event_shards(tmp_path_factory, eegmat_dir: Path) -> Path:
    """A real recording (eegmat Subject00_2, prepped) given crafted events, and an artifact."""
    config = load_prep_config(None)
    raw = mne.io.read_raw_edf(eegmat_dir / "Subject00_2.edf", preload=False, verbose="error")
    recording, _ = process_raw(raw, config, recording_id="ev__s00",
                               attrs={"dataset": "ev", "subject": "00", "session": None,
                                      "run": "1", "source": "crafted", "source_sha256": "0"})
    recording.data[3, 4200:4210] += 5000.0  # artifact inside the epoch at 4000 only
    onsets = [1000, 2000, 3000, 4000, 12300]  # the last runs past the end (12400 samples)
    recording.events = events_frame(onsets, [0] * 5, [7, 8, 7, 8, 7],
                                    ["left", "right", "left", "right", "left"])
    out = tmp_path_factory.mktemp("event_shards")
    (out / "prep_config.yaml").write_text("config_hash: test\n")
    with ShardWriter(out, sfreq=200.0, config_hash="test") as writer:
        writer.write(recording)
    return out


def test_epochs_around_events_with_rejection(event_shards: Path):
    task = TaskConfig(type="events", classes={"left": "L", 8: "R"}, tmin_s=-0.5, tmax_s=1.5)
    epochs = build_task_set(task, event_shards, multiple_of=200, progress=False)
    assert epochs.class_names == ["L", "R"]
    np.testing.assert_array_equal(epochs.start, [900, 1900, 2900, 3900])
    np.testing.assert_array_equal(epochs.y, [0, 1, 0, 1])
    assert epochs.info["epochs_outside_recording"] == 1
    window = ShardReader(event_shards).read_window("ev__s00", 1900, 400)
    np.testing.assert_array_equal(epochs.x[1], window.data)
    rejected = build_task_set(dataclasses.replace(task, reject_uv=1000.0), event_shards,
                              multiple_of=200, progress=False)
    np.testing.assert_array_equal(rejected.start, [900, 1900, 2900])
    assert rejected.info["rejected_windows"] == {"L": 0, "R": 1}


def test_moabb_fake_dataset_task(tmp_path: Path):
    """moabb:FakeDataset through our prep (coordinates for every channel), MOABB's events and
    interval; a second call reuses the converted cache."""
    prep = load_prep_config(None, moabb_options={"FakeDataset": {
        "seed": 0, "n_sessions": 1, "n_runs": 1, "duration": 60, "n_events": 20}})
    task = TaskConfig(type="events", reject_uv=None)
    first = build_task_set(task, "moabb:FakeDataset:1-2", multiple_of=200, sfreq=200.0,
                           prep_config=prep, cache_dir=tmp_path, progress=False)
    assert first.class_names == ["fake1", "fake2", "fake3"]
    assert first.window_s == 3.0  # FakeDataset.interval = [0, 3]
    assert sorted(set(first.subject.tolist())) == ["1", "2"]
    assert np.isfinite(first.coords).all() and first.channel_mask.all()
    assert first.common_channels() == ["C3", "Cz", "C4"]
    again = build_task_set(task, "moabb:FakeDataset:2", multiple_of=200, prep_config=prep,
                           cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.x, first.x[first.subject == "2"])
