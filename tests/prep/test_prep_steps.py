"""Each pure step on synthetic signals and on a real eegmat recording."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from eegfm.prep import steps
from eegfm.prep.config import PrepError, load_prep_config


def _sines(freqs, sfreq, seconds=40.0):
    t = np.arange(int(seconds * sfreq)) / sfreq
    return np.array([np.sin(2 * np.pi * f * t) for f in freqs])


def _gain(y, margin):
    return np.abs(y[:, margin:-margin]).max(axis=1)


@pytest.mark.parametrize(
    ("sfreq_in", "n"), [(500, 9101), (128, 3000), (5000, 20000), (256, 7777), (499.712, 5000)]
)
def test_resample_matches_scipy_and_is_blockwise_exact(sfreq_in, n):
    config = load_prep_config(None, lowpass_hz=None)  # no passband: scipy's filter
    x = np.random.default_rng(0).normal(size=(3, n))
    y = steps.resample(x, sfreq_in, config)
    up, down = steps.resample_ratio(sfreq_in, config.sfreq)
    reference = signal.resample_poly(x, up, down, axis=1)
    kernel = steps.resample_kernel(up, down)
    edge = len(kernel) // down + 2  # edges differ: we reflect, scipy pads with zeros
    assert y.shape == reference.shape
    np.testing.assert_allclose(y[:, edge:-edge], reference[:, edge:-edge], atol=1e-12)
    blocks = []
    for m0 in range(0, y.shape[1], 333):
        m1 = min(y.shape[1], m0 + 333)
        k0, k1 = steps.resample_span(m0, m1, up, down, kernel)
        segment = steps.read_reflected(lambda a, b: x[:, a:b], k0, k1, n)
        blocks.append(steps.resample_block(segment, k0, m0, m1, up, down, kernel))
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), y)


@pytest.mark.parametrize("sfreq_in", [500.0, 1000.0, 250.0])
def test_resample_with_a_passband_uses_a_shorter_filter_with_the_same_effect(config, sfreq_in):
    up, down = steps.resample_ratio(sfreq_in, config.sfreq)
    assert len(steps.resample_kernel(up, down, sfreq_in, 75.0)) < len(
        steps.resample_kernel(up, down)
    )
    x = _sines([10.0, 70.0, 130.0], sfreq_in)  # 130 Hz would alias to 70 Hz
    y = steps.resample(x, sfreq_in, config)
    z = steps.resample(x, sfreq_in, load_prep_config(None, lowpass_hz=None))
    gain = _gain(y, 200)
    assert np.allclose(gain[:2], 1, atol=0.005)
    if sfreq_in > 260:  # at 250 Hz nothing in the input can alias below 75 Hz
        assert gain[2] < 0.002
    np.testing.assert_allclose(y[:2, 200:-200], z[:2, 200:-200], atol=0.005)


def test_bandpass_keeps_the_band_and_removes_the_rest(config):
    x = _sines([0.05, 10.0, 30.0, 90.0], 200.0)
    gain = _gain(steps.bandpass(x, 200.0, config), 2000)
    assert gain[1] == pytest.approx(1, abs=0.01) and gain[2] == pytest.approx(1, abs=0.01)
    assert gain[0] < 0.05 and gain[3] < 0.01


def test_notch_removes_line_frequency_and_keeps_neighbours(config):
    x = _sines([50.0, 45.0, 55.0, 10.0], 200.0)
    gain = _gain(steps.notch(x, 200.0, config), 2000)
    assert gain[0] < 0.01
    assert np.allclose(gain[1:], 1, atol=0.01)
    sixty = _gain(steps.notch(_sines([60.0, 50.0], 200.0), 200.0, config, line_freq=60.0), 2000)
    assert sixty[0] < 0.01 and sixty[1] == pytest.approx(1, abs=0.01)
    assert steps.notch_freqs(config, 50.0, 200.0) == [50.0]
    assert steps.notch_freqs(config, 50.0, 1000.0) == [50.0]  # nothing above lowpass_hz
    assert steps.notch_freqs(config.__class__(lowpass_hz=None), 50.0, 1000.0)[-1] == 450.0


def test_rereference_units_and_flags(config):
    x = np.random.default_rng(1).normal(size=(4, 1000))
    good = np.array([True, True, False, True])
    y = steps.rereference(x, 200.0, config, good=good)
    np.testing.assert_allclose(y[good].mean(axis=0), 0, atol=1e-12)
    assert steps.rereference(x, 200.0, config.__class__(reference="none")) is x
    assert steps.to_microvolts(np.array([1e-6]))[0] == pytest.approx(1.0)
    flags = steps.flag_channels(np.array([0.01, 10.0, 12.0, 9.0, 500.0]), config)
    assert flags["flat"].tolist() == [True, False, False, False, False]
    assert flags["noisy"].tolist() == [False, False, False, False, True]


def test_check_finite_names_the_channel():
    x = np.zeros((3, 10))
    x[1, 4] = np.inf
    with pytest.raises(PrepError, match=r"rec\.edf: NaN/Inf samples in channel\(s\) Cz.*104"):
        steps.check_finite(x, ["Fz", "Cz", "Pz"], "rec.edf", offset=100)


def test_steps_on_a_real_recording(config, real_raw):
    raw = real_raw
    x = steps.to_microvolts(raw.get_data(picks=list(range(19))))
    y = steps.bandpass(steps.notch(steps.resample(x, 500.0, config), 200.0, config), 200.0, config)
    assert y.shape == (19, steps.resampled_length(raw.n_times, 2, 5))
    freqs, power = signal.welch(y, fs=200.0, nperseg=800)
    in_band = power[:, (freqs > 5) & (freqs < 30)].mean()
    assert power[:, np.argmin(np.abs(freqs - 50))].mean() < 1e-3 * in_band
    assert power[:, freqs > 85].mean() < 1e-4 * in_band
    assert np.abs(y.mean(axis=1)).max() < 1.0  # DC gone (µV)


def test_reflect_pad_and_reflect_fill_are_numpy_reflect():
    x = np.arange(12.0).reshape(2, 6)
    for before, after in [(0, 3), (3, 0), (5, 5), (2, 4), (6, 6), (9, 2)]:
        expected = np.pad(x, ((0, 0), (before, after)), mode="reflect")
        np.testing.assert_array_equal(steps.reflect_pad(x, before, after), expected)
    for before, after in [(0, 3), (3, 0), (5, 5), (2, 4), (6, 6), (9, 2)]:
        expected = np.pad(x, ((0, 0), (before, after)), mode="reflect")
        padded = np.full((2, before + 6 + after + 3), np.nan)
        padded[:, before : before + 6] = x
        steps.reflect_fill(padded, before, before + 6, before + 6 + after)
        np.testing.assert_array_equal(padded[:, : before + 6 + after], expected)
        assert np.isnan(padded[:, before + 6 + after :]).all()  # columns past `end` untouched


@pytest.mark.parametrize(
    "sfreq_in", [500.0, 1000.0, 250.0, 256.0, 160.0, 300.0, 200.0, 5000.0, 128.0]
)
@pytest.mark.parametrize(("lo", "length"), [(-660, 2000), (37, 1321 + 1), (4000, 6000)])
def test_fused_resample_filter_equals_upfirdn_then_fir(config, sfreq_in, lo, length):
    up, down = steps.resample_ratio(sfreq_in, config.sfreq)
    resample_kernel = steps.resample_kernel(up, down, sfreq_in, config.lowpass_hz)
    fir = steps.filter_kernel(config.sfreq, config, line_freq=50.0)
    filters = steps.ResampleFilter(up, down, resample_kernel, fir)
    hi = lo + length
    filters.fused = True
    k0, k1 = filters.input_span(lo, hi)
    assert (k0 * up - filters.half) % down == 0  # grid-aligned: no kernel shift needed
    x = np.random.default_rng(int(sfreq_in)).normal(size=(3, k1 - k0)).cumsum(axis=1)
    reference = steps.fir_valid(steps.resample_block(x, k0, lo, hi, up, down, resample_kernel), fir)
    assert reference.shape == (3, length - len(fir) + 1)
    for fused in (True, False):
        filters.fused = fused
        padded = np.zeros((3, filters.padded_length(x.shape[1])))
        padded[:, : x.shape[1]] = x
        out = filters.block(padded, k0, lo, hi)
        if not fused:  # the same two calls
            np.testing.assert_array_equal(out, reference)
            continue
        # docs/prep.md: equal to ~1e-14 of the peak (FFT round-off; at most 8.5e-15 measured on
        # these 27 cases, i.e. ~1e-12 absolute on their peaks of ~100)
        np.testing.assert_allclose(out, reference, rtol=0, atol=1e-13 * np.abs(reference).max())


def test_fused_path_is_chosen_where_it_is_cheaper():
    assert steps.fused_is_faster(2, 5)  # 500 Hz -> 200 Hz
    assert steps.fused_is_faster(2, 1)  # 100 Hz -> 200 Hz
    assert not steps.fused_is_faster(25, 32)  # 256 Hz: polyphase filtering is cheaper
    assert not steps.fused_is_faster(1, 6)  # 1,200 Hz: so is it from here on
    assert not steps.fused_is_faster(1, 1)  # nothing to resample
    filters = steps.ResampleFilter(2, 5, np.ones(75), np.ones(11))
    for n in range(30_000, 36_000):
        length = filters.fft_length(n)
        assert length % 5 == 0 and n + 75 // 2 < length < 1.12 * n
    assert len({filters.fft_length(n) for n in range(30_000, 36_000)}) <= 6  # shared by blocks
