"""Data back out: shard recordings as MNE Raw (re-prepped to the same samples) and braindecode."""

from __future__ import annotations

import re
from pathlib import Path

import mne
import numpy as np
import pytest

from eegfm.prep import load_prep_config, run_prep
from eegfm.shards import ShardReader, to_braindecode, to_raw

EEGMAT = ["Subject00_2.edf", "Subject01_2.edf"]
DEVICE_FILES = [  # (folder below formats/, files): a BioSemi BDF with triggers, an ANT cap
    ("BDF", ["test_bdf_stim_channel.bdf"]),
    ("antio/CA_208", ["test_CA_208.vhdr", "test_CA_208.eeg", "test_CA_208.vmrk"]),
]
# a bipolar chain computed from eegmat's referential channels (10-20 old names in the file)
BIPOLAR = {"Fp1-F7": ("Fp1", "F7"), "F7-T7": ("F7", "T3"), "T7-P7": ("T3", "T5"),
           "P7-O1": ("T5", "O1"), "Fp2-F8": ("Fp2", "F8"), "F8-T8": ("F8", "T4")}
FILE_BAD = "T7-P7"
# a second prep that changes nothing it need not: no filters, no notch, no re-reference
UNFILTERED = {"highpass_hz": None, "lowpass_hz": None, "line_freq_hz": None, "reference": "none"}
LEVEL_S = 10.0  # prep removes each channel's mean over its first 10 s before filtering


def _bipolar_fif(eegmat_dir: Path, path: Path) -> Path:
    """A 30-s bipolar recording of eegmat Subject02_2 whose file marks one derivation bad."""
    raw = mne.io.read_raw_edf(eegmat_dir / "Subject02_2.edf", preload=True, verbose="error")
    raw.crop(0, 30, include_tmax=False)
    data = np.array([raw.get_data(picks=[f"EEG {a}"])[0] - raw.get_data(picks=[f"EEG {b}"])[0]
                     for a, b in BIPOLAR.values()])
    info = mne.create_info(list(BIPOLAR), raw.info["sfreq"], "eeg")
    bipolar = mne.io.RawArray(data, info, verbose="error")
    bipolar.info["bads"] = [FILE_BAD]
    bipolar.save(path, verbose="error")
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory, eegmat_dir: Path, formats_dir: Path) -> Path:
    """Default-prep shards of two eegmat recordings, a bipolar FIF, the BDF and the ANT file."""
    source = tmp_path_factory.mktemp("src") / "mixed"
    source.mkdir()
    for name in EEGMAT:
        (source / name).symlink_to(eegmat_dir / name)
    for folder, names in DEVICE_FILES:
        for name in names:
            (source / name).symlink_to(formats_dir / folder / name)
    _bipolar_fif(eegmat_dir, source / "bipolar_raw.fif")
    out = tmp_path_factory.mktemp("shards")
    run_prep([str(source)], out, load_prep_config(None), progress=False)
    return out


def test_to_raw_holds_volts_positions_events_and_bads(shards: Path):
    reader = ShardReader(shards)
    assert len(reader) == 5
    for entry in reader.entries:
        raw = to_raw(shards, entry.recording_id)
        stored = reader.read_recording(entry.recording_id)
        assert raw.ch_names == list(stored.ch_names) and raw.info["sfreq"] == entry.sfreq
        assert set(raw.get_channel_types()) == {"eeg"}
        np.testing.assert_allclose(raw.get_data() * 1e6, stored.data, rtol=1e-12, atol=0)
        locs = np.array([ch["loc"] for ch in raw.info["chs"]])
        np.testing.assert_array_equal(locs[:, :3], stored.coords)
        bipolar = np.isfinite(stored.ref_coords).all(axis=1)
        np.testing.assert_array_equal(locs[bipolar, 3:6], stored.ref_coords[bipolar])
        montage = raw.get_montage().get_positions()
        assert montage["coord_frame"] == "head"
        np.testing.assert_array_equal(np.array(list(montage["ch_pos"].values())), stored.coords)
        events = reader.events(entry.recording_id)
        assert list(raw.annotations.description) == events["label"].tolist()
        np.testing.assert_allclose(raw.annotations.onset * entry.sfreq, events["onset"])
        np.testing.assert_allclose(raw.annotations.duration * entry.sfreq, events["duration"])
        assert raw.info["bads"] == entry.bad_channels
        attrs = reader.attrs(entry.recording_id)
        assert (raw.info["highpass"], raw.info["lowpass"]) == (attrs["highpass"], attrs["lowpass"])
    bipolar_id = next(e.recording_id for e in reader.entries if "bipolar" in e.recording_id)
    assert FILE_BAD in reader.entry(bipolar_id).bad_channels
    assert np.isfinite(reader.read_recording(bipolar_id).ref_coords).all()
    with pytest.raises(KeyError, match=re.escape(f"no recording 'mixed__nope.edf' in {shards}")):
        to_raw(shards, "mixed__nope.edf")


def test_to_raw_written_as_fif_re_preps_to_the_same_recording(shards: Path, tmp_path: Path):
    back = tmp_path / "back"
    back.mkdir()
    reader = ShardReader(shards)
    for entry in reader.entries:
        raw = to_raw(reader, entry.recording_id)
        raw.info["line_freq"] = None  # else the second prep would notch at the file's line
        raw.save(back / f"{entry.recording_id}_raw.fif", verbose="error")
    again = tmp_path / "again"
    run_prep([str(back)], again, load_prep_config(None, **UNFILTERED), progress=False)
    second = ShardReader(again)
    assert len(second) == len(reader)
    for entry in reader.entries:
        new_id = f"back__{entry.recording_id}_raw.fif"
        first, other = reader.read_recording(entry.recording_id), second.read_recording(new_id)
        assert other.ch_names == first.ch_names
        np.testing.assert_array_equal(other.coords, first.coords)
        np.testing.assert_array_equal(other.ref_coords, first.ref_coords)
        n_level = min(first.data.shape[1], round(LEVEL_S * entry.sfreq))
        expected = first.data - first.data[:, :n_level].astype(np.float64).mean(1, keepdims=True)
        peak = float(np.abs(first.data).max())
        np.testing.assert_allclose(other.data, expected, rtol=0,
                                   atol=2 * np.finfo(np.float32).eps * peak)
        assert second.events(new_id).to_dict("list") == reader.events(entry.recording_id).to_dict(
            "list")
        assert second.entry(new_id).bad_channels == entry.bad_channels
        methods = set(second.attrs(new_id)["coord_methods"])
        assert methods == {"digitization"}  # positions read back from the file, not a template


def test_braindecode_view_has_every_sample_and_description(shards: Path):
    from braindecode.preprocessing import create_fixed_length_windows

    reader = ShardReader(shards)
    dataset = to_braindecode(shards)
    assert [len(d) for d in dataset.datasets] == [e.n_samples for e in reader.entries]
    assert len(dataset) == sum(e.n_samples for e in reader.entries)
    description = dataset.description
    assert description["recording_id"].tolist() == [e.recording_id for e in reader.entries]
    assert description["dataset"].unique().tolist() == ["mixed"]
    eegmat = description[description["recording_id"] == "mixed__Subject00_2.edf"].iloc[0]
    assert (eegmat["subject"], eegmat["run"]) == ("00", "2")
    x, _ = dataset.datasets[0][100]
    np.testing.assert_allclose(
        x[:, 0] * 1e6, reader.read_window(reader.entries[0].recording_id, 100, 1).data[:, 0],
        rtol=1e-12)
    wanted = ["mixed__Subject01_2.edf", "mixed__test_bdf_stim_channel.bdf"]
    chosen = to_braindecode(shards, wanted, target_name="subject")
    assert chosen.description["recording_id"].tolist() == wanted
    windows = create_fixed_length_windows(
        chosen, window_size_samples=800, window_stride_samples=800, drop_last_window=True)
    assert len(windows) == sum(reader.entry(r).n_samples // 800 for r in wanted)
    assert windows.datasets[0][0][1] == "01"  # the target: the recording's subject
    with pytest.raises(KeyError, match=re.escape("no recording 'mixed__nope.edf'")):
        to_braindecode(shards, ["mixed__nope.edf"])
