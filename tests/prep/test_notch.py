"""The line-noise notch of the production cleaning chain, against the depth docs/prep.md states.

The chain is `stream.CleaningPlan` + `stream.filtered_blocks`: resampling and one FIR holding
band-pass and notch, fused into one product of spectra (`ResampleFilter.fused`) or run as
`upfirdn` + FIR, depending on the input rate. docs/prep.md ("Notch and band-pass are one FIR")
promises, at the default config: at least 60 dB of attenuation within 0.5 Hz of the line
frequency, at least 50 dB within 0.75 Hz (the notch band `notch_width_hz` less half the
transition on each side), and its neighbours 3 Hz away kept within 1 %. The pure step
`steps.notch` is tested in test_prep_steps.py; these tests run the chain as `eegfm prep` does:
sinusoids through every path, a real recording with a known line added (fused path, written
and read back as a shard) and a real recording with real 60 Hz mains (the `upfirdn` path).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import mne
import numpy as np
import pytest
from scipy import signal

from eegfm.prep import run_prep
from eegfm.prep.config import load_prep_config
from eegfm.prep.pipeline import process_raw
from eegfm.prep.stream import CleaningPlan, filtered_blocks
from eegfm.shards import ShardReader

NOTCH_DB = 60.0  # within LINE_HALF_HZ of the line (docs/prep.md)
LINE_HALF_HZ = 0.5
STOP_DB = 50.0  # within notch_width_hz / 2 - transition / 2 of the line
NEIGHBOUR_HZ = 3.0  # kept within 1 %


def _db(ratio) -> np.ndarray:
    return -20 * np.log10(np.asarray(ratio))


def _amplitudes(y: np.ndarray, freqs, sfreq: float, others=()) -> np.ndarray:
    """Complex amplitude of each row at its frequency (least squares with a constant and
    sinusoids at `others`, which would otherwise leak into the estimate)."""
    t = np.arange(y.shape[1]) / sfreq
    out = []
    for row, freq in zip(y, freqs, strict=True):
        waves = [f for g in (freq, *others) for f in (np.cos(2 * np.pi * g * t),
                                                      np.sin(2 * np.pi * g * t))]
        (c, s, *_), *_ = np.linalg.lstsq(np.stack([*waves, 1 + 0 * t]).T, row, rcond=None)
        out.append(c - 1j * s)
    return np.array(out)


def _chain_gains(sfreq_in: float, freqs, config, line_freq: float, seconds: float = 24.0):
    """|gain| of the production chain (µV out per µV in) at each frequency, from sinusoids."""
    n_in = int(seconds * sfreq_in)
    t = np.arange(n_in) / sfreq_in
    x = 1e-4 * np.sin(2 * np.pi * np.asarray(freqs)[:, None] * t + 0.3)  # 100 µV, in volts
    plan = CleaningPlan.build(n_in, sfreq_in, len(freqs), config, line_freq=line_freq)
    out = np.zeros((len(freqs), plan.n_out))
    for m0, block in filtered_blocks(lambda a, b: x[:, a:b], plan):
        out[:, m0 : m0 + block.shape[1]] = block
    edge = int(6 * config.sfreq)  # past the FIR's half-length (3.3 s) and the resampler's
    out = out[:, edge:-edge]
    gains = []
    for row, freq in zip(out, freqs, strict=True):
        # below 150 Hz the resampler passes part of the image at sfreq_in - f (e.g. 67.6 Hz of
        # 60.4 Hz at 128 Hz, in its transition band): an output at another frequency, fitted
        # so its leakage over the window does not pass for notch depth
        image = [sfreq_in - freq] if sfreq_in - freq < config.sfreq / 2 else []
        gains.append(abs(_amplitudes(row[None], [freq], config.sfreq, image)[0]) / 100.0)
    return plan, np.array(gains)


# input rates: which path `eegfm prep` takes from each to 200 Hz
RATES = {
    500.0: True,  # eegmat: fused (up 2, down 5)
    1000.0: True,  # fused (1, 5)
    250.0: True,  # EGI: fused (4, 5)
    256.0: False,  # Muse: upfirdn + FIR (25, 32)
    128.0: False,  # EEGLAB test file: upfirdn + FIR (25, 16)
    200.0: False,  # Nihon Kohden: no resampling, the FIR alone
}


@pytest.mark.parametrize("line", [50.0, 60.0])
@pytest.mark.parametrize("sfreq_in", list(RATES))
def test_chain_notch_depth_on_both_filter_paths(sfreq_in: float, line: float) -> None:
    config = load_prep_config(None)
    half_stop = config.notch_width_hz / 2 - config.transition / 2  # 0.75 Hz
    deep = line + np.linspace(-LINE_HALF_HZ, LINE_HALF_HZ, 21)
    stop = line + np.array([-half_stop, -0.6, 0.6, half_stop])
    kept = [10.0, 30.0, line - NEIGHBOUR_HZ, line + NEIGHBOUR_HZ]
    # a 128 Hz input's own anti-aliasing (scipy's filter, cut at 64 Hz) takes its top part
    kept = [f for f in kept if f < 0.8 * sfreq_in / 2]
    plan, gains = _chain_gains(sfreq_in, [*deep, *stop, *kept], config, line_freq=line)
    assert plan.filters.fused is RATES[sfreq_in]
    deep_db, stop_db = _db(gains[: len(deep)]), _db(gains[len(deep) : -len(kept)])
    assert deep_db.min() >= NOTCH_DB, (deep[np.argmin(deep_db)], deep_db.min())
    assert stop_db.min() >= STOP_DB, (stop[np.argmin(stop_db)], stop_db.min())
    np.testing.assert_allclose(gains[-len(kept) :], 1.0, atol=0.01)


@pytest.mark.parametrize(("sfreq_in", "fused"), [(1000.0, True), (2048.0, False)])
def test_chain_notches_every_harmonic_below_the_low_pass(sfreq_in: float, fused: bool) -> None:
    """With a 500 Hz output and a 200 Hz low-pass: 50, 100 and 150 Hz (not 200)."""
    config = load_prep_config(None, sfreq=500.0, lowpass_hz=200.0)
    harmonics = [50.0, 100.0, 150.0]
    freqs = [*harmonics, *(h + 0.4 for h in harmonics), 125.0, 190.0]
    plan, gains = _chain_gains(sfreq_in, freqs, config, line_freq=50.0, seconds=16.0)
    assert plan.filters.fused is fused
    assert _db(gains[:6]).min() >= NOTCH_DB, _db(gains[:6])
    np.testing.assert_allclose(gains[6:], 1.0, atol=0.01)


def _line_amplitudes(data: np.ndarray, line: float, sfreq: float = 200.0) -> np.ndarray:
    return _amplitudes(data, [line] * len(data), sfreq)


def test_known_line_added_to_a_real_recording_is_removed_to_the_stated_depth(
    tmp_path: Path, eegmat_dir: Path
) -> None:
    """eegmat Subject00_2 (500 Hz: the fused path; low-passed at 45 Hz by its amplifier, so it
    holds almost no mains of its own) plus 50 Hz of 20-200 µV, a different amplitude and phase
    per channel, through `run_prep` into a shard: the line left in the shard is at least 60 dB
    below the line that went in (after the average reference, which removes its common part),
    and the rest of the shard is the shard of the untouched recording."""
    raw = mne.io.read_raw_edf(eegmat_dir / "Subject00_2.edf", preload=True, verbose="error")
    rng = np.random.default_rng(50)
    n_eeg = 19  # EEG Fp1 .. EEG O2; the two non-scalp signals are dropped by prep
    amplitude = np.r_[rng.uniform(20, 200, n_eeg), 0, 0] * 1e-6  # volts
    phase = rng.uniform(0, 2 * np.pi, len(amplitude))
    t = raw.times
    line = amplitude[:, None] * np.sin(2 * np.pi * 50.0 * t + phase[:, None])
    noisy = mne.io.RawArray(raw.get_data() + line, raw.info, verbose="error")
    folder = tmp_path / "in"
    folder.mkdir()
    raw.save(folder / "clean_raw.fif", verbose="error")
    noisy.save(folder / "line_raw.fif", verbose="error")
    summary = run_prep([str(folder)], tmp_path / "out", None, progress=False)
    assert not summary.failures, summary.failures
    reader = ShardReader(tmp_path / "out")
    clean, with_line = (reader.read_recording(f"in__{n}_raw.fif") for n in ("clean", "line"))
    attrs = reader.attrs("in__line_raw.fif")
    assert attrs["orig_sfreq"] == 500.0 and attrs["notch_freqs"] == [50.0]
    assert attrs["bad_channels"] == [] == reader.attrs("in__clean_raw.fif")["bad_channels"]

    phasor_in = amplitude[:n_eeg] * 1e6 * np.exp(1j * (phase[:n_eeg] - np.pi / 2))  # µV
    phasor_in = phasor_in - phasor_in.mean()  # average reference over the 19 good channels
    edge = 800  # 4 s: the FIR's half-length (3.3 s) and the resampler's
    inner = slice(edge, with_line.data.shape[1] - edge)
    left = _line_amplitudes(with_line.data[:, inner].astype(float), 50.0)
    assert np.abs(phasor_in).min() > 10  # µV: every channel carries line into the chain
    depth = _db(np.abs(left).max() / np.abs(phasor_in).max())
    print(f"eegmat + 50 Hz: line left {depth:.1f} dB below the line that went in")
    assert depth >= NOTCH_DB, depth
    # per channel, on the difference (exactly the chain's response to the added line)
    response = _line_amplitudes((with_line.data - clean.data)[:, inner].astype(float), 50.0)
    assert _db(np.abs(response) / np.abs(phasor_in)).min() >= NOTCH_DB
    assert np.abs(with_line.data - clean.data)[:, inner].max() < 1e-3 * np.abs(phasor_in).max()


def test_real_60_hz_mains_of_a_consumer_headband_is_removed_to_the_stated_depth(
    shared_eeg: Path,
) -> None:
    """A Muse recording (256 Hz: the `upfirdn` + FIR path) whose 60 Hz mains stands 35-50 dB
    above the neighbouring spectrum, cleaned with `line_freq_hz: 60` (as data_prep/README.md
    shows for recordings made in the Americas) and the file's own reference (the average of 4
    channels would cancel much of a common-mode line by itself): the PSD within 0.5 Hz of 60 Hz
    drops by at least 60 dB, the spectrum 2-3 Hz away is unchanged (1 dB)."""
    path = shared_eeg / "muse/visual/go_no_go/go_no_go_subject3_session1_2018-05-04-180635.edf"
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    config = replace(load_prep_config(None), line_freq_hz=60.0, reference="none")
    attrs = {"dataset": "muse", "subject": "3", "session": "1", "run": None, "source": "x.edf",
             "source_sha256": "0" * 64}  # fmt: skip
    recording, _ = process_raw(raw, config, recording_id="muse", attrs=attrs)
    assert recording.attrs["notch_freqs"] == [60.0] and raw.info["sfreq"] == 256.0
    x = raw.get_data() * 1e6
    y = recording.data[:, 800:-800].astype(float)  # without the filters' 4-s end effects
    f_in, p_in = signal.welch(x, fs=256.0, nperseg=256 * 32)
    f_out, p_out = signal.welch(y, fs=200.0, nperseg=200 * 32)

    def band(freqs, power, lo, hi):
        return power[:, (freqs >= lo) & (freqs <= hi)].mean(axis=1)

    line_in = band(f_in, p_in, 60 - LINE_HALF_HZ, 60 + LINE_HALF_HZ)
    near_in = band(f_in, p_in, 57.0, 58.0)
    assert (10 * np.log10(line_in / near_in)).min() > 30, "the file carries mains"
    drop = 10 * np.log10(line_in / band(f_out, p_out, 60 - LINE_HALF_HZ, 60 + LINE_HALF_HZ))
    print(f"Muse 60 Hz mains: PSD within 0.5 Hz of 60 Hz down {drop.min():.1f}-{drop.max():.1f} dB")
    assert drop.min() >= NOTCH_DB, drop
    for lo, hi in [(57.0, 58.0), (62.0, 63.0)]:
        kept = 10 * np.log10(band(f_out, p_out, lo, hi) / band(f_in, p_in, lo, hi))
        assert np.abs(kept).max() < 1.0, (lo, hi, kept)
