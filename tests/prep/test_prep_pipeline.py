"""The per-recording pipeline on real files: picking, locating, events, flags, write/read."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from eegfm.prep.config import PrepError, load_prep_config
from eegfm.prep.events import annotation_events, stim_events
from eegfm.prep.pipeline import pick_eeg, process_raw, write_raw
from eegfm.prep.readers import read_recording_file
from eegfm.shards import ShardReader, ShardWriter

ATTRS = {
    "dataset": "test",
    "subject": "00",
    "session": None,
    "run": "2",
    "source": "x.edf",
    "source_sha256": "0" * 64,
}


def test_eegmat_channels_and_attrs(real_raw, config):
    recording, report = process_raw(real_raw, config, recording_id="eegmat__s00", attrs=ATTRS)
    assert recording.data.shape == (19, 12400) and recording.data.dtype == np.float32
    assert {"T7", "T8", "P7", "P8", "Fp1", "Cz"} <= set(recording.ch_names)
    assert not {"A2-A1", "ECG", "A2"} & set(recording.ch_names)
    assert np.isfinite(recording.coords).all() and np.isnan(recording.ref_coords).all()
    assert report["localization"]["non_scalp"] == ["EEG A2-A1", "ECG ECG"]
    attrs = recording.attrs
    assert attrs["orig_sfreq"] == 500.0 and attrs["line_freq"] == 50.0
    assert (attrs["highpass"], attrs["lowpass"]) == (0.5, 45.0)  # the EDF header says LP:45Hz
    assert attrs["reference"] == "average" and attrs["bad_channels"] == []
    assert attrs["source_ch_names"][6] == "EEG T3" and recording.ch_names[6] == "T7"
    assert set(attrs["coord_methods"]) == {"template"} and len(attrs["montage_id"]) == 16
    assert 1 < np.median(recording.data.std(axis=1)) < 100  # µV
    np.testing.assert_allclose(recording.data.mean(axis=0), 0, atol=1e-3)


def test_streamed_write_equals_in_memory(real_raw, config, tmp_path):
    recording, _ = process_raw(real_raw, config, recording_id="a", attrs=ATTRS)
    tiny = load_prep_config(None, chunk_mb=0.5)  # blocks of 6 s, buffer in a scratch file
    with ShardWriter(tmp_path, sfreq=200.0) as writer:
        write_raw(writer, real_raw, config, recording_id="a", attrs=ATTRS, scratch_dir=tmp_path)
        write_raw(writer, real_raw, tiny, recording_id="b", attrs=ATTRS, scratch_dir=tmp_path)
    (tmp_path / "prep_config.yaml").write_text("config_hash: x\n")
    reader = ShardReader(tmp_path)
    window = reader.read_recording("a")
    np.testing.assert_array_equal(window.data, recording.data)
    assert window.ch_names == tuple(recording.ch_names)
    np.testing.assert_allclose(reader.read_recording("b").data, recording.data, atol=2e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.jsonl",
        "prep_config.yaml",
        "shard-00000.h5",
    ]  # no scratch file left


def test_egi_keeps_257_digitised_positions_and_its_pauses(formats_dir, config):
    raw = read_recording_file(formats_dir / "EGI/test_egi_multiepoch_paused.mff", config)
    recording, report = process_raw(raw, config, recording_id="egi", attrs=ATTRS)
    assert len(recording.ch_names) == 257
    assert report["localization"]["counts"] == {"digitization": 257}
    attrs = recording.attrs
    # VREF (the reference, all zeros) and three electrodes railed at -321 mV are constant
    assert attrs["flat_channels"] == ["E93", "E157", "E172", "VREF"]
    assert set(attrs["bad_channels"]) == {*attrs["flat_channels"], *attrs["noisy_channels"]}
    assert "BAD_ACQ_SKIP" in set(recording.events["label"])
    skip = recording.events[recording.events["label"] == "BAD_ACQ_SKIP"].iloc[1]
    inside = recording.data[:, skip.onset + 5 : skip.onset + skip.duration - 5]
    assert inside.size and np.all(inside == 0)
    # no filter transient from the ±300 mV offsets jumping to the zero-filled pauses (it reached
    # 190 mV); this test net's own slow drifts still reach a few mV
    assert np.abs(recording.data).max() < 10_000


def test_stim_and_annotation_events(formats_dir, config):
    raw = read_recording_file(formats_dir / "BDF/test_bdf_stim_channel.bdf", config)
    assert pick_eeg(raw) == ([0, 1, 2], [3])
    events = stim_events(raw, [3], config, block=700)  # blocks cut through events
    whole = mne.find_events(raw, stim_channel="Status", consecutive=True, verbose="error")
    assert events["code"].tolist() == whole[:, 2].tolist()
    np.testing.assert_array_equal(events["onset"], np.round(whole[:, 0] * 200 / 500))
    recording, _ = process_raw(raw, config, recording_id="bdf", attrs=ATTRS)
    assert recording.events["code"].tolist() == whole[:, 2].tolist()
    nihon = read_recording_file(formats_dir / "NihonKohden/MB0400FU.EEG", config)
    table = annotation_events(nihon, config, 5800, {})
    assert table["label"].tolist() == list(nihon.annotations.description)
    expected = np.round(nihon.annotations.onset * 200).astype(int)
    assert table["onset"].tolist() == expected.tolist() and (table["code"] == -1).all()


def test_nan_channel_is_rejected_and_flat_channel_flagged(real_raw, config):
    data = real_raw.get_data()
    data[2, 700] = np.nan
    with pytest.raises(PrepError, match=r"x\.edf: NaN/Inf samples in channel\(s\) EEG F3"):
        process_raw(
            mne.io.RawArray(data, real_raw.info, verbose="error"),
            config,
            recording_id="nan",
            attrs=ATTRS,
        )
    data = real_raw.get_data()
    data[5] = 0.0
    data[7] *= 100  # 'EEG T4' noisy
    raw = mne.io.RawArray(data, real_raw.info, verbose="error")
    raw.info["bads"] = ["EEG O1"]
    recording, _ = process_raw(raw, config, recording_id="flags", attrs=ATTRS)
    assert recording.attrs["flat_channels"] == ["F8"]
    assert recording.attrs["noisy_channels"] == ["T8"]
    assert recording.attrs["bad_channels"] == ["F8", "T8", "O1"]
    good = ~np.isin(recording.ch_names, ["F8", "T8", "O1"])
    np.testing.assert_allclose(recording.data[good].mean(axis=0), 0, atol=1e-3)


def test_unlocatable_recording_fails_naming_the_fix(formats_dir, config):
    raw = read_recording_file(formats_dir / "Brainvision/test_NO.vhdr", config)
    with pytest.raises(PrepError, match=r"0 of 65 EEG channels could be located.*montages"):
        process_raw(raw, config, recording_id="no", attrs={"source": "test_NO.vhdr"})


def test_cnt_file_layout_is_an_explicit_opt_in(formats_dir):
    path = formats_dir / "CNT/scan41_short.cnt"
    options = [{"match": "*.cnt", "options": {"data_format": "int32"}}]
    config = load_prep_config(None, reader_options=options)
    raw = read_recording_file(path, config)
    with pytest.raises(PrepError, match="could be located"):
        process_raw(raw, config, recording_id="cnt", attrs={"source": str(path)})
    config = load_prep_config(
        None, reader_options=options, montages=[{"match": "*.cnt", "montage": "file_layout"}]
    )
    recording, report = process_raw(raw, config, recording_id="cnt", attrs={"source": str(path)})
    counts = report["localization"]["counts"]
    assert counts["header_layout"] == len(recording.ch_names) == 124  # LEFT_EAR, NA1 off the cap
    # on the template head: colin27's 10-05 sites lie 0.085-0.143 m from the head origin
    radii = np.linalg.norm(recording.coords, axis=1)
    assert radii.min() >= 0.085 and radii.max() <= 0.145


def test_event_codes(config):
    from eegfm.prep.config import load_prep_config
    from eegfm.prep.events import event_code

    assert event_code("Stimulus/S  1", config, {}) == 1
    assert event_code("[Total time]+182.000", config, {}) == -1  # a number, not a code
    assert event_code("rest", config, {}) == -1
    assert event_code("left_hand", config, {"left_hand": 2}) == 2  # MOABB's event_id
    assert event_code("rest", load_prep_config(None, event_codes={"rest": 7}), {}) == 7
