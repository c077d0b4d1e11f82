"""Pure per-recording signal steps: `(x, sfreq, config) -> x`, with x (C, T) float64.

Signals are padded by reflection at their two ends (like MNE's filters). `eegfm.prep.stream` runs
the same functions block by block with overlap margins, so a recording of any length is cleaned
in bounded memory and gives the output of the whole-array functions below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

from eegfm.prep.config import PrepConfig, PrepError

VOLTS_TO_UV = 1e6


def reflect_pad(x: np.ndarray, before: int, after: int) -> np.ndarray:
    """Extend (C, T) along time by mirroring it at its ends (numpy's 'reflect')."""
    if before == after == 0:
        return x
    n = x.shape[1]
    if before >= n or after >= n:  # longer than the signal: numpy mirrors repeatedly
        return np.pad(x, ((0, 0), (before, after)), mode="reflect")
    out = np.empty((x.shape[0], before + n + after), dtype=x.dtype)
    out[:, before : before + n] = x
    out[:, :before] = x[:, 1 : before + 1][:, ::-1]
    out[:, before + n :] = x[:, n - 1 - after : n - 1][:, ::-1]
    return out


def reflect_fill(x: np.ndarray, start: int, stop: int, end: int) -> np.ndarray:
    """Fill x[:, :start] and x[:, stop:end] by mirroring x[:, start:stop] (as `reflect_pad`)."""
    n, before, after = stop - start, start, end - stop
    if before >= n or after >= n:
        x[:, :end] = np.pad(x[:, start:stop], ((0, 0), (before, after)), mode="reflect")
        return x
    x[:, :start] = x[:, start + 1 : start + 1 + before][:, ::-1]
    x[:, stop:end] = x[:, stop - 1 - after : stop - 1][:, ::-1]
    return x


def read_reflected(
    read: Callable[[int, int], np.ndarray], start: int, stop: int, n: int
) -> np.ndarray:
    """Samples [start, stop) of a length-n signal given by `read(a, b)`, reflected past its ends."""
    lo, hi = max(0, start), min(n, stop)
    return reflect_pad(read(lo, hi), lo - start, stop - hi)


# --------------------------------------------------------------------------------- resampling
def resample_ratio(sfreq_in: float, sfreq_out: float) -> tuple[int, int]:
    """Integer (up, down) with sfreq_out / sfreq_in = up / down."""
    ratio = (Fraction(str(float(sfreq_out))) / Fraction(str(float(sfreq_in)))).limit_denominator(
        100_000
    )
    return ratio.numerator, ratio.denominator


def resample_kernel(
    up: int, down: int, sfreq_in: float | None = None, passband_hz: float | None = None
) -> np.ndarray:
    """Polyphase anti-aliasing filter at sfreq_in * up, gain `up`.

    Without a passband: the filter scipy's `resample_poly` uses. With `passband_hz` (the
    band-pass upper edge) below both Nyquist frequencies, only what would alias into the
    passband must go, so the transition runs from the passband edge to its first alias and a
    shorter Kaiser filter (60 dB) does the same job.
    """
    if up == down == 1:
        return np.ones(1)
    if sfreq_in and passband_hz:
        slowest = min(sfreq_in, sfreq_in * up / down)
        width = slowest - 2 * min(passband_hz, slowest / 2)
        if width > 0.1 * slowest:
            nyquist_up = sfreq_in * up / 2
            n_taps, beta = signal.kaiserord(60.0, width / nyquist_up)
            n_taps += 1 - n_taps % 2
            return signal.firwin(n_taps, slowest / 2 / nyquist_up, window=("kaiser", beta)) * up
    half = 10 * max(up, down)
    return signal.firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up


def resampled_length(n_in: int, up: int, down: int) -> int:
    """Number of output samples for n_in input samples (as `resample_poly`)."""
    return -(-n_in * up // down)


def resample_span(m0: int, m1: int, up: int, down: int, kernel: np.ndarray) -> tuple[int, int]:
    """Input samples [k0, k1) that output samples [m0, m1) depend on."""
    half = (len(kernel) - 1) // 2
    return -(-(m0 * down - half) // up), ((m1 - 1) * down + half) // up + 1


def resample_block(
    segment: np.ndarray, k0: int, m0: int, m1: int, up: int, down: int, kernel: np.ndarray
) -> np.ndarray:
    """Output samples [m0, m1) from `segment` = input samples [k0, k0 + len) (see resample_span)."""
    if up == down == 1:
        return segment[:, m0 - k0 : m1 - k0]
    half = (len(kernel) - 1) // 2
    delay = half - k0 * up  # output m reads the upsampled input at m * down + delay - j
    shift = (-delay) % down
    first = (delay + shift) // down
    padded_kernel = np.concatenate([np.zeros(shift), kernel])
    out = signal.upfirdn(padded_kernel, segment, up, down, axis=1)
    return out[:, m0 + first : m1 + first]


def resample(x: np.ndarray, sfreq: float, config: PrepConfig) -> np.ndarray:
    """Resample (C, T) to `config.sfreq` with a polyphase anti-aliasing filter."""
    up, down = resample_ratio(sfreq, config.sfreq)
    kernel = resample_kernel(up, down, sfreq, config.lowpass_hz)
    n_out = resampled_length(x.shape[1], up, down)
    k0, k1 = resample_span(0, n_out, up, down, kernel)
    segment = read_reflected(lambda a, b: x[:, a:b], k0, k1, x.shape[1])
    return resample_block(segment, k0, 0, n_out, up, down, kernel)


# ------------------------------------------------------------------------------------ filtering
def notch_freqs(config: PrepConfig, line_freq: float | None, sfreq: float) -> list[float]:
    """Line frequency and harmonics to remove (below the low-pass edge and Nyquist)."""
    line = line_freq or config.line_freq_hz
    if not line:
        return []
    top = min(config.lowpass_hz or sfreq / 2, sfreq / 2) - config.notch_width_hz
    return [k * line for k in range(1, int(top // line) + 1)]


def filter_kernel(
    sfreq: float,
    config: PrepConfig,
    *,
    line_freq: float | None = None,
    notch: bool = True,
    bandpass: bool = True,
) -> np.ndarray:
    """One linear-phase FIR (Hamming window) for the band-pass and/or the notches at sfreq."""
    edges, pass_zero = [], True
    if bandpass and config.highpass_hz:
        edges.append(config.highpass_hz)
        pass_zero = False
    if notch:
        for freq in notch_freqs(config, line_freq, sfreq):
            edges += [freq - config.notch_width_hz / 2, freq + config.notch_width_hz / 2]
    if bandpass and config.lowpass_hz and config.lowpass_hz < sfreq / 2:
        edges.append(config.lowpass_hz)
    if not edges:
        return np.ones(1)
    n_taps = int(np.ceil(3.3 * sfreq / config.transition)) // 2 * 2 + 1
    return signal.firwin(n_taps, edges, pass_zero=pass_zero, fs=sfreq, window="hamming")


def fir_valid(
    x: np.ndarray, kernel: np.ndarray, spectra: dict[int, np.ndarray] | None = None
) -> np.ndarray:
    """'valid' convolution of (C, n) with an FIR along time: one FFT per channel.

    One transform of the whole block beats overlap-add here (27-46 % faster than
    `signal.oaconvolve` on 60-180 s blocks of 19 channels); `spectra` caches the kernel's
    transform per FFT length, since a recording's blocks share a few lengths.
    """
    n, taps = x.shape[1], len(kernel)
    size = sp_fft.next_fast_len(n, real=True)
    spectrum = None if spectra is None else spectra.get(size)
    if spectrum is None:
        spectrum = sp_fft.rfft(kernel, size)
        if spectra is not None:
            spectra[size] = spectrum
    # circular convolution of length >= n wraps only into the first taps - 1 outputs
    return sp_fft.irfft(sp_fft.rfft(x, size, axis=1) * spectrum, size, axis=1)[:, taps - 1 : n]


_FFT_FACTORS = tuple(sorted({3**b * 5**c for b in range(4) for c in range(4)}))


class ResampleFilter:
    """Resampling then one FIR at the new rate, on blocks of input samples, in bounded memory.

    `block(x, k0, lo, hi)` gives the FIR's 'valid' output for resampled samples [lo, hi), i.e.
    samples [lo + taps - 1, hi), from x = input samples [k0, k0 + len) (`input_span`). When the
    rates allow (`fused`), both filters run as one product of spectra: one transform of the
    input block, the polyphase filter, the decimation (a fold of the spectrum) and the FIR, then
    one inverse transform at the new rate; circular convolution of a zero-padded block is the
    linear one, so this equals `signal.upfirdn` followed by `fir_valid` (up to FFT round-off:
    at most 1e-13 of the block's peak, tests/prep/test_prep_steps.py) at about 70 % of the
    cost (500 -> 200 Hz). Otherwise it runs those two.
    """

    def __init__(self, up: int, down: int, resample_kernel: np.ndarray, fir_kernel: np.ndarray):
        self.up, self.down = up, down
        self.resample_kernel, self.fir_kernel = resample_kernel, fir_kernel
        self.half = (len(resample_kernel) - 1) // 2
        self.taps = len(fir_kernel)
        # input samples where the polyphase grid starts on an output sample (no kernel shift)
        self.phase = self.half * pow(up, -1, down) % down if down > 1 else 0
        self.fused = fused_is_faster(up, down)
        self._folds: dict[int, list[tuple]] = {}
        self._fir_spectra: dict[int, np.ndarray] = {}

    def input_span(self, lo: int, hi: int) -> tuple[int, int]:
        """Input samples [k0, k1) that resampled samples [lo, hi) depend on (fused: k0 aligned)."""
        k0, k1 = resample_span(lo, hi, self.up, self.down, self.resample_kernel)
        return (k0 - (k0 - self.phase) % self.down if self.fused else k0), k1

    def block(self, x: np.ndarray, k0: int, lo: int, hi: int) -> np.ndarray:
        """FIR-filtered resampled samples [lo + taps - 1, hi) from input samples [k0, ...)."""
        if not self.fused:
            resampled = resample_block(x, k0, lo, hi, self.up, self.down, self.resample_kernel)
            return fir_valid(resampled, self.fir_kernel, self._fir_spectra)
        if (k0 * self.up - self.half) % self.down:
            raise ValueError(f"input block starts at {k0}, off the polyphase grid (input_span)")
        first = (self.half - k0 * self.up) // self.down  # resampled m is decimated m + first
        n_fft = self.fft_length(self.input_span(lo, hi)[1] - k0)
        spectrum = sp_fft.rfft(x, n_fft, axis=1)
        n_out = self.up * n_fft // self.down
        runs = self._fold(n_fft)
        folded = np.zeros((x.shape[0], n_out // 2 + 1), complex)
        # two channels at a time: their spectra and sums stay in cache (2.4x faster fold)
        mirrored = np.empty((2, folded.shape[1]), complex)
        scratch = np.empty_like(mirrored)
        for row in range(0, x.shape[0], 2):
            direct = folded[row : row + 2]
            n_rows = direct.shape[0]
            mirror = mirrored[:n_rows]
            mirror[:] = 0.0
            rows = spectrum[row : row + 2]
            for k_start, k_stop, source, is_mirrored, weights in runs:
                product = np.multiply(
                    rows[:, source], weights, out=scratch[:n_rows, : k_stop - k_start]
                )
                target = (mirror if is_mirrored else direct)[:, k_start:k_stop]
                np.add(target, product, out=target)
            direct += np.conjugate(mirror, out=mirror)
        out = sp_fft.irfft(folded, n_out, axis=1)
        return out[:, lo + first + self.taps - 1 : hi + first]

    def padded_length(self, n_in: int) -> int:
        """Columns `block` wants for n_in input samples (zeros after them cost no copy)."""
        return self.fft_length(n_in) if self.fused else n_in

    def fft_length(self, n_in: int) -> int:
        """Transform length for n_in input samples: no wrap-around, a multiple of `down`.

        Lengths are 2^a * 3^b * 5^c with b, c <= 3 (sixteen per octave, fast for pocketfft):
        close enough to the need (3 % over on average), and few enough that the last blocks of
        recordings of different lengths share lengths and their cached transforms (every new
        length costs a fold to set up, about one block's work).
        """
        tail = -(-(len(self.resample_kernel) + self.down) // self.up) + 1  # kernel's reach
        need = -(-(int(n_in) + tail) // self.down)
        return self.down * min(
            factor << max(0, (-(-need // factor) - 1).bit_length()) for factor in _FFT_FACTORS
        )

    def _fold(self, n_fft: int) -> list[tuple]:
        """Per run of output bins: (k_start, k_stop, input bins, mirrored?, weights).

        Output bin k of the decimated, filtered block is (1/down) * sum over l of
        H[k + l*Q] * X[(k + l*Q) mod n_fft] * G[k] (H: polyphase filter at the upsampled
        length P = up * n_fft = down * Q, X: input transform, G: FIR transform). Bins of X
        above n_fft / 2 are conjugates of the real transform's bins, read mirrored and
        conjugated once at the end (`mirrored` holds conj(W) * X there).
        """
        if n_fft in self._folds:
            return self._folds[n_fft]
        up, down = self.up, self.down
        n_up = up * n_fft
        n_out = n_up // down
        n_bins = n_out // 2 + 1
        kernel_spectrum = sp_fft.rfft(self.resample_kernel, n_up)
        fir_spectrum = sp_fft.rfft(self.fir_kernel, n_out)
        runs = []
        for alias in range(down):
            upsampled = alias * n_out + np.arange(n_bins)  # bins of the upsampled spectrum
            h = np.where(
                upsampled <= n_up // 2,
                kernel_spectrum[np.minimum(upsampled, n_up // 2)],
                np.conj(kernel_spectrum[np.minimum(n_up - upsampled, n_up // 2)]),
            )
            weights = h * fir_spectrum / down
            source = upsampled % n_fft
            mirrored = source > n_fft // 2
            # split into runs of consecutive output bins reading consecutive input bins
            cut = np.flatnonzero((np.diff(source) != 1) | (mirrored[1:] != mirrored[:-1]))
            for start, stop in zip(np.r_[0, cut + 1], np.r_[cut + 1, n_bins], strict=True):
                if mirrored[start]:
                    # X[n_fft - j] for j = source[start] .. source[stop - 1] (>= 1)
                    index = slice(n_fft - source[start], n_fft - source[stop - 1] - 1, -1)
                    w = np.conj(weights[start:stop])
                else:
                    index = slice(source[start], source[stop - 1] + 1)
                    w = weights[start:stop]
                runs.append((int(start), int(stop), index, bool(mirrored[start]), w))
        self._folds[n_fft] = runs
        return runs


def fused_is_faster(up: int, down: int) -> bool:
    """Whether the one-transform path beats polyphase filtering + FIR for this ratio.

    The fold costs ~down complex products per output bin and the input transform grows with
    down / up, while `upfirdn` grows with its kernel. Measured on 60-s blocks of 19 channels at
    16 common rates (`benchmarks/bench_prep.py --filters`): faster exactly where the resampling
    ratio is not 1 and both up and down are at most 5 (100-1000 Hz recordings to 200 Hz: 3-63 %
    less time); slower at 1,200-5,000 Hz and for the 2^k rates (up = 25).
    """
    return (up, down) != (1, 1) and max(up, down) <= 5


def fir_filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Zero-phase FIR filtering of (C, T) along time, reflection-padded."""
    if len(kernel) == 1:
        return x * kernel[0]
    half = (len(kernel) - 1) // 2
    padded = read_reflected(lambda a, b: x[:, a:b], -half, x.shape[1] + half, x.shape[1])
    return fir_valid(padded, kernel)


def notch(
    x: np.ndarray, sfreq: float, config: PrepConfig, line_freq: float | None = None
) -> np.ndarray:
    """Remove the line frequency and its harmonics."""
    return fir_filter(x, filter_kernel(sfreq, config, line_freq=line_freq, bandpass=False))


def bandpass(x: np.ndarray, sfreq: float, config: PrepConfig) -> np.ndarray:
    """Keep `config.highpass_hz` .. `config.lowpass_hz`."""
    return fir_filter(x, filter_kernel(sfreq, config, notch=False))


# ------------------------------------------------------------------------ reference, units, flags
def to_microvolts(
    x: np.ndarray,
    sfreq: float | None = None,
    config: PrepConfig | None = None,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """MNE's volts to µV (in place with `out=x`)."""
    return np.multiply(x, VOLTS_TO_UV, out=out)


def rereference(
    x: np.ndarray, sfreq: float, config: PrepConfig, good: np.ndarray | None = None
) -> np.ndarray:
    """Average reference over the `good` channels (all if None); unchanged for 'none'.

    The average is taken in float64 whatever x's dtype; the result keeps x's dtype.
    """
    if config.reference == "none":
        return x
    good = np.ones(len(x), bool) if good is None else np.asarray(good, bool)
    if not good.any():
        good = np.ones(len(x), bool)  # every channel bad: the plain average is the best we have
    return x - x[good].mean(axis=0, keepdims=True, dtype=np.float64).astype(x.dtype, copy=False)


def flag_channels(std_uv: np.ndarray, config: PrepConfig) -> dict[str, np.ndarray]:
    """Boolean masks of flat and noisy channels from their (band-passed, µV) std."""
    std_uv = np.asarray(std_uv, dtype=float)
    flat = std_uv < config.flat_std_uv
    alive = std_uv[~flat]
    median = np.median(alive) if alive.size else 0.0
    noisy = ~flat & (std_uv > config.noisy_std_ratio * median) if median > 0 else ~flat & False
    return {"flat": flat, "noisy": noisy}


def check_finite(x: np.ndarray, ch_names: Sequence[str], source: str, offset: int = 0) -> None:
    """Raise PrepError naming the channels (and first sample) holding NaN or Inf."""
    finite = np.isfinite(x)
    if finite.all():
        return
    bad_rows = np.flatnonzero(~finite.all(axis=1))
    first = offset + int(np.flatnonzero(~finite[bad_rows[0]])[0])
    names = ", ".join(ch_names[i] for i in bad_rows[:10])
    raise PrepError(
        f"{source}: NaN/Inf samples in channel(s) {names} (first at input sample "
        f"{first}); repair or exclude these channels"
    )
