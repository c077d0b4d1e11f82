"""`eegfm prep` on look-alike, unusable and corrupt recordings: nothing lost, nothing hidden.

Every input is a real eegmat recording, modified in a copy: samples edited and saved as FIF
(which keeps NaN), or bytes of the EDF header edited.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from eegfm.prep import PrepError, load_prep_config, readers, run_prep
from eegfm.prep.readers import raw_fingerprint, read_recording_file
from eegfm.shards import read_manifest

CONFIG = load_prep_config(None)
SIGNALS = 22  # eegmat EDF+: 21 signals and the annotations
SAMPLES_FIELD = 256 + 216 * SIGNALS  # samples per data record of the first signal


@pytest.fixture(autouse=True)
def _quiet_mne():
    mne.set_log_level("ERROR")


def _raw(eegmat_dir: Path, name: str = "Subject00_2.edf") -> mne.io.BaseRaw:
    return mne.io.read_raw_edf(eegmat_dir / name, preload=True, verbose="error")


def _save(raw: mne.io.BaseRaw, data: np.ndarray, path: Path) -> Path:
    """`data` with `raw`'s channels as a FIF file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mne.io.RawArray(data, raw.info, verbose="error").save(path, verbose="error")
    return path


def _prep(sources: list[Path], out: Path) -> tuple[list[str], dict[str, str], list[dict]]:
    """Converted ids, {file name: failure reason} and duplicate records of one run_prep."""
    summary = run_prep([str(s) for s in sources], out, CONFIG, progress=False)
    failures = {Path(f["source"]).name: f["reason"] for f in summary.failures}
    return sorted(summary.converted), failures, summary.duplicates


def _edf_copy(eegmat_dir: Path, tmp_path: Path, edits: dict[int, bytes]) -> Path:
    """A copy of Subject00_2.edf with `edits` (byte offset -> bytes) applied."""
    data = bytearray((eegmat_dir / "Subject00_2.edf").read_bytes())
    for offset, value in edits.items():
        data[offset : offset + len(value)] = value
    path = tmp_path / "edited.edf"
    path.write_bytes(bytes(data))
    return path


def _reader_error(path: Path) -> str:
    with pytest.raises(PrepError) as raised:
        read_recording_file(path, CONFIG)
    return str(raised.value)


# ------------------------------------------------------------------------- 1. duplicates
def test_recordings_alike_in_their_first_seconds_are_both_stored(tmp_path, eegmat_dir):
    folder = tmp_path / "flat_start"
    for name in ("Subject00_2.edf", "Subject01_2.edf"):  # two subjects, 62 s at 500 Hz each
        raw = _raw(eegmat_dir, name)
        data = raw.get_data()
        data[:, : 10 * 500] = 0.0  # the first 10 s flat
        _save(raw, data, folder / name.replace(".edf", "_raw.fif"))
    converted, failures, duplicates = _prep([folder], tmp_path / "out")
    assert duplicates == [] and failures == {}
    assert converted == ["flat_start__Subject00_2_raw.fif", "flat_start__Subject01_2_raw.fif"]


def test_nan_copy_fails_as_nan_not_as_a_duplicate(tmp_path, eegmat_dir):
    raw = _raw(eegmat_dir, "Subject04_2.edf").crop(0, 20)
    data = raw.get_data()
    _save(raw, data, tmp_path / "in/a_clean_raw.fif")
    data[2, 7500:7510] = np.nan  # 'EEG F3', after the first 10 s
    _save(raw, data, tmp_path / "in/b_nan_raw.fif")
    converted, failures, duplicates = _prep([tmp_path / "in"], tmp_path / "out")
    assert converted == ["in__a_clean_raw.fif"] and duplicates == []
    assert "NaN/Inf samples in channel(s) EEG F3" in failures["b_nan_raw.fif"]


def test_fingerprint_reads_bounded_blocks_whatever_their_size(eegmat_dir, monkeypatch):
    raw = read_recording_file(eegmat_dir / "Subject00_1.edf", CONFIG)  # 182 s, lazy
    spans = []
    get_data = raw.get_data

    def spy(*args, start=0, stop=None, **kwargs):
        spans.append(stop - start)
        return get_data(*args, start=start, stop=stop, **kwargs)

    raw.get_data = spy
    whole = raw_fingerprint(raw)
    assert spans == [raw.n_times]  # 21 channels x 91,000 samples: one 15-MB block
    assert whole.startswith("v2:")  # not comparable with the unversioned 10-s prefix ones
    spans.clear()
    assert raw_fingerprint(raw, block_samples=1000) == whole
    assert max(spans) <= 1000 and sum(spans) == raw.n_times
    assert raw_fingerprint(raw, block_samples=4099) == whole  # edges at odd places
    # the default block is a memory bound (32 MB), not a duration: here 1 MB
    monkeypatch.setattr(readers, "_FINGERPRINT_BLOCK_BYTES", 1e6)
    spans.clear()
    assert raw_fingerprint(raw) == whole
    assert len(spans) > 10 and max(spans) * len(raw.ch_names) * 8 <= 1e6


# ------------------------------------------------------------------ 9. unusable recordings
def test_all_flat_recording_fails(tmp_path, eegmat_dir):
    raw = _raw(eegmat_dir)
    data = np.zeros((len(raw.ch_names), raw.n_times))
    path = _save(raw, data, tmp_path / "in/flat_raw.fif")
    converted, failures, _ = _prep([path], tmp_path / "out")
    assert converted == [] and read_manifest(tmp_path / "out") == []
    assert "all 19 EEG channels are flat" in failures["flat_raw.fif"], failures
    # one live channel: the average reference would zero it, min_channels asks for two
    data[0] = raw.get_data(picks=[0])[0]
    path = _save(raw, data, tmp_path / "in2/one_live_raw.fif")
    _, failures, _ = _prep([path], tmp_path / "out2")
    assert "1 of 19 EEG channels carry signal (18 flat: EEG Fp2" in failures["one_live_raw.fif"]
    assert "min_channels=2" in failures["one_live_raw.fif"]


@pytest.mark.parametrize("n_samples", [11, 201])
def test_too_short_recording_fails_naming_its_length(tmp_path, eegmat_dir, n_samples):
    raw = _raw(eegmat_dir).crop(0, (n_samples - 1) / 500)
    path = _save(raw, raw.get_data(), tmp_path / f"in/short{n_samples}_raw.fif")
    converted, failures, _ = _prep([path], tmp_path / "out")
    reason = failures[path.name]
    assert converted == [] and f"{n_samples} samples" in reason and "shorter than" in reason


def test_one_second_is_long_enough(tmp_path, eegmat_dir):
    raw = _raw(eegmat_dir).crop(0, 1.0, include_tmax=False)  # 500 samples -> 200 at 200 Hz
    path = _save(raw, raw.get_data(), tmp_path / "in/second_raw.fif")
    converted, failures, _ = _prep([path], tmp_path / "out")
    assert failures == {} and converted == ["in__second_raw.fif"]
    assert read_manifest(tmp_path / "out")[0].n_samples == 200


# ---------------------------------------------------------------------- 11. clear messages
def test_corrupt_header_size_says_the_header_is_corrupt(tmp_path, eegmat_dir):
    reason = _reader_error(_edf_copy(eegmat_dir, tmp_path, {184: b"5632    "}))
    assert "AssertionError: )" not in reason and "header is corrupt" in reason
    assert "22 signals" in reason and "5632" in reason


@pytest.mark.parametrize("samples", [b"5000    ", b"400     "])
def test_corrupt_samples_per_record_is_not_called_truncated(tmp_path, eegmat_dir, samples):
    reason = _reader_error(_edf_copy(eegmat_dir, tmp_path, {SAMPLES_FIELD: samples}))
    assert "truncated" not in reason and "header is corrupt" in reason
    assert "samples per data record" in reason and "21114 bytes" in reason


def test_truncated_copy_is_still_called_truncated(tmp_path, eegmat_dir):
    original = (eegmat_dir / "Subject00_2.edf").read_bytes()
    path = tmp_path / "cut.edf"
    path.write_bytes(original[: len(original) * 6 // 10])
    reason = _reader_error(path)
    assert "truncated" in reason and "allow_truncated" in reason


def test_reader_error_without_text_says_what_is_wrong(tmp_path, formats_dir, monkeypatch):
    # a reader's bare `assert` (MNE's EDF reader has several): the message is empty
    def bare_assert(*args, **kwargs):
        raise AssertionError

    monkeypatch.setattr(mne.io, "read_raw", bare_assert)
    reason = _reader_error(formats_dir / "BDF/test_bdf_stim_channel.bdf")
    assert reason.endswith(
        "test_bdf_stim_channel.bdf: MNE cannot read it: its header is corrupt or it is not a BDF "
        "file (AssertionError, without a message)"
    )


def test_one_located_channel_names_min_channels_not_the_montage(tmp_path, eegmat_dir):
    raw = _raw(eegmat_dir).pick(["EEG Fp1", "EEG A2-A1", "ECG ECG"])  # 1 scalp, 2 non-scalp
    path = _save(raw, raw.get_data(), tmp_path / "in/one_raw.fif")
    _, failures, _ = _prep([path], tmp_path / "out")
    reason = failures["one_raw.fif"]
    assert "1 of 3 EEG channels could be located (EEG Fp1)" in reason
    assert "min_channels=2" in reason and "montages" not in reason


# --------------------------------------------------------------- 12. no stray warnings
def test_non_finite_samples_fail_without_numpy_warnings(tmp_path, eegmat_dir):
    raw = _raw(eegmat_dir, "Subject04_2.edf").crop(0, 20)
    for name, value in (("nan_raw.fif", np.nan), ("inf_raw.fif", np.inf)):
        data = raw.get_data()
        data[2, 1000:1010] = value
        _save(raw, data, tmp_path / "in" / name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, failures, _ = _prep([tmp_path / "in"], tmp_path / "out")
    assert sorted(failures) == ["inf_raw.fif", "nan_raw.fif"]
    assert all("NaN/Inf samples in channel(s) EEG F3" in r for r in failures.values())
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
