"""Sources: folder discovery, companions, entities, reader options, fingerprints, BIDS, MOABB."""

from __future__ import annotations

from pathlib import Path

import mne
import mne_bids
import numpy as np
import pytest

from eegfm.prep.config import PrepError, load_prep_config
from eegfm.prep.pipeline import process_raw
from eegfm.prep.readers import load_item, raw_fingerprint, read_recording_file, source_files
from eegfm.prep.sources import entities_from_name, expand_sources

FORMATS = [
    "BDF/test_bdf_stim_channel.bdf",
    "Brainvision/test_NO.vhdr",
    "CNT/scan41_short.cnt",
    "EDF/test_reduced.edf",
    "EEGLAB/test_raw.set",
    "EGI/test_egi_multiepoch_paused.mff",
    "NihonKohden/MB0400FU.EDF",
    "NihonKohden/MB0400FU.EEG",
    "antio/CA_208/test_CA_208.vhdr",
]


def test_folder_discovery_finds_each_recording_once(formats_dir, config):
    items = expand_sources([str(formats_dir)], config)
    assert [item.relative for item in items] == FORMATS  # no BrainVision .eeg, no EEGLAB .fdt
    assert {item.dataset for item in items} == {"formats"}
    assert items[0].recording_id() == "formats__BDF__test_bdf_stim_channel.bdf"
    named = expand_sources([str(formats_dir / "BDF")], load_prep_config(None, dataset="biosemi"))
    assert named[0].recording_id() == "biosemi__test_bdf_stim_channel.bdf"
    with pytest.raises(PrepError, match="does not exist"):
        expand_sources([str(formats_dir / "nothing_here")], config)


def test_companion_files(formats_dir):
    names = lambda path: [p.name for p in source_files(formats_dir / path)]  # noqa: E731
    assert names("antio/CA_208/test_CA_208.vhdr") == [
        "test_CA_208.vhdr",
        "test_CA_208.eeg",
        "test_CA_208.vmrk",
    ]
    assert names("EEGLAB/test_raw.set") == ["test_raw.set", "test_raw.fdt"]
    assert "MB0400FU.EDF" not in names("NihonKohden/MB0400FU.EEG")
    assert {"MB0400FU.PNT", "MB0400FU.LOG", "MB0400FU.21E"} <= set(
        names("NihonKohden/MB0400FU.EEG")
    )
    assert len(names("EGI/test_egi_multiepoch_paused.mff")) > 10


def test_entities_from_file_names(config):
    assert entities_from_name("Subject07_2.edf", config) == {
        "subject": "07",
        "session": None,
        "run": "2",
    }
    assert entities_from_name("sub-3_ses-b_run-4_eeg.fif", config) == {
        "subject": "3",
        "session": "b",
        "run": "4",
    }
    assert entities_from_name("MB0400FU.EEG", config) == {
        "subject": None,
        "session": None,
        "run": None,
    }


def test_cnt_needs_its_reader_option(formats_dir, config):
    path = formats_dir / "CNT/scan41_short.cnt"
    with pytest.raises(PrepError, match=r"scan41_short\.cnt.*reader_options.*data_format"):
        read_recording_file(path, config)
    configured = load_prep_config(
        None, reader_options=[{"match": "*.cnt", "options": {"data_format": "int32"}}]
    )
    assert read_recording_file(path, configured).info["nchan"] == 128


def test_fingerprint_spots_the_same_recording_in_two_formats(formats_dir, eegmat_dir, config):
    nihon = read_recording_file(formats_dir / "NihonKohden/MB0400FU.EEG", config)
    export = read_recording_file(formats_dir / "NihonKohden/MB0400FU.EDF", config)
    assert nihon.ch_names != export.ch_names
    assert raw_fingerprint(nihon) == raw_fingerprint(export)
    other = [
        raw_fingerprint(read_recording_file(eegmat_dir / f"Subject0{i}_2.edf", config))
        for i in range(2)
    ]
    assert len({*other, raw_fingerprint(nihon)}) == 3


def _bids_dataset(root: Path, eegmat_dir: Path) -> np.ndarray:
    """A one-recording BIDS dataset (EDF + electrodes.tsv) written from eegmat Subject07_2."""
    raw = mne.io.read_raw_edf(eegmat_dir / "Subject07_2.edf", preload=True, verbose="error")
    raw.crop(0, 20, include_tmax=False).rename_channels(lambda name: name.removeprefix("EEG "))
    raw.set_channel_types({"A2-A1": "misc", "ECG ECG": "ecg"})
    raw.rename_channels({"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"})
    template = mne.channels.make_standard_montage("standard_1005").get_positions()
    shifted = {n: template["ch_pos"][n] + [0.004, 0, 0] for n in raw.ch_names[:19]}
    raw.set_montage(
        mne.channels.make_dig_montage(
            shifted,
            nasion=template["nasion"],
            lpa=template["lpa"],
            rpa=template["rpa"],
            coord_frame="head",
        )
    )
    raw.info["line_freq"] = 60.0
    raw.set_annotations(mne.Annotations([2.0, 9.5], [1.0, 0.0], ["rest", "count"]))
    path = mne_bids.BIDSPath(
        subject="07", session="01", task="arith", run=2, root=root, datatype="eeg"
    )
    mne_bids.write_raw_bids(raw, path, allow_preload=True, format="EDF", verbose=False)
    return np.array(list(shifted.values()))


def test_bids_root_positions_come_from_electrodes_tsv(tmp_path, eegmat_dir, config):
    shifted = _bids_dataset(tmp_path / "mybids", eegmat_dir)
    items = expand_sources([str(tmp_path / "mybids")], config)
    assert [(i.kind, i.dataset) for i in items] == [("bids", "mybids")]
    (loaded,) = load_item(items[0], config)
    assert loaded.recording_id == "mybids__sub-07_ses-01_task-arith_run-2_eeg"
    assert (loaded.attrs["subject"], loaded.attrs["session"], loaded.attrs["run"]) == (
        "07",
        "01",
        "2",
    )
    recording, report = process_raw(
        loaded.raw, config, recording_id=loaded.recording_id, attrs=loaded.attrs
    )
    assert report["localization"]["counts"] == {"digitization": 19}
    np.testing.assert_allclose(recording.coords, shifted, atol=1e-6)
    assert recording.attrs["line_freq"] == 60.0  # from the BIDS sidecar, not the config
    assert recording.events["label"].tolist() == ["rest", "count"]  # from events.tsv
    assert recording.events["onset"].tolist() == [400, 1900]


def test_moabb_fake_dataset(config):
    config = load_prep_config(None, moabb_options={"FakeDataset": {"seed": 3, "n_subjects": 2}})
    items = expand_sources(["moabb:FakeDataset:2"], config)
    assert [(i.kind, i.location) for i in items] == [("moabb", "moabb:FakeDataset:2")]
    recordings = list(load_item(items[0], config))
    assert [r.recording_id for r in recordings] == [
        f"FakeDataset__sub-2_ses-{s}_run-{r}" for s in "01" for r in "01"
    ]
    first = recordings[0]
    assert first.attrs["subject"] == "2" and first.event_id == {"fake1": 1, "fake2": 2, "fake3": 3}
    recording, report = process_raw(
        first.raw,
        config,
        recording_id=first.recording_id,
        attrs=first.attrs,
        event_id=first.event_id,
    )
    assert recording.ch_names == ["C3", "Cz", "C4"]
    assert report["localization"]["counts"] == {"digitization": 3}
    assert set(recording.events["code"]) <= {1, 2, 3} and len(recording.events) == 60
    with pytest.raises(PrepError, match="subjects \\[7\\]"):
        expand_sources(["moabb:FakeDataset:1,7"], config)
    with pytest.raises(PrepError, match="no dataset 'NoSuchSet'"):
        expand_sources(["moabb:NoSuchSet"], config)
