"""Neuro-statistics targets of masked pretraining, computed on the fly from the unmasked window.

Pure, batched torch functions: they run on the batch's device and never read a value back to
the host. Call them outside autocast (the pretrainer does): a bf16 matrix product would round
the band sums and covariances to three digits. Two families, each predicted by a small
pretraining-only head of :class:`eegfm.models.MaskedPretrainer`:

* **band power**, per channel and 1-s patch: log10 absolute power (µV²) and log10 relative
  power (band / total 1–45 Hz) in ``BANDS_HZ``, from a Hann-windowed periodogram of the patch;
* **amplitude-envelope correlation**, per window: for each band of ``CONNECTIVITY_BANDS``, the
  Pearson correlation between channels of the Hilbert envelopes of the band-passed signal,
  a ``(B, C, C)`` matrix per band.

**Input: the signal in µV, not the robust-scaled ``x_norm``.** ``x_norm`` divides each channel
by its own robust scale and clips it at ±20, so its log power would mostly repeat the spectral
shape that relative power already gives, and clipping would bend the spectrum of windows with
artefacts. Absolute power in µV is what the classical log band-power features hold; the
encoder can reach it because it receives ``log10(scale)`` through its amplitude embedding.
Relative power and correlations are scale-free, so for them the two inputs agree up to
clipping.

**Normalisation: fixed constants, not batch statistics.** Each feature is standardised as
``(value - mean) / std`` with the constants of ``BANDPOWER_STATS`` / ``CONNECTIVITY_STATS``,
measured once on the 48 eegmat recordings of ``../shared/eeg`` (default prep, every 1-s patch
of every channel; every 4-s window for correlations), then clamped to ±``TARGET_CLIP``. A
window's target then never depends on the other windows of its batch (with batch statistics,
a single-device batch would hide its device's level, and DDP ranks would disagree), and the
best constant prediction stays a fair baseline. On other devices the targets are off-centre
but O(1): 1 std of log power is about half a decade.

Invalid channels (padding, NaN coordinates: ``valid`` False) are zeroed before any arithmetic
and get target 0; the pretrainer gives them zero weight. eegfm batches have no padded patches
(``pad_collate`` pads channels only; every window of a run has the same length), and each
patch's band power depends on its own samples only.
"""

from __future__ import annotations

import torch

BANDS_HZ: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}
"""Frequency bands, half-open ``[low, high)`` Hz; their union 1–45 Hz is the total power."""

CONNECTIVITY_BANDS: tuple[str, ...] = ("alpha", "beta")
"""Bands of the amplitude-envelope correlation."""

POWER_FLOOR_UV2 = 0.01
"""Added to band power before the log: (0.1 µV)², the encoder's robust-scale floor, so a flat
channel gives a finite target."""

ENVELOPE_EDGE_S = 0.25
"""Envelope samples this close to either end of the window are left out of the correlation:
the FFT band-pass treats the window as periodic, and the jump at its wrap rings for about one
over the bandwidth (0.2 s for alpha) at both ends of every channel at once."""

RELATIVE_FLOOR = 1e-4
"""Relative power is floored here before its log (a flat channel's 0)."""

TARGET_CLIP = 6.0
"""Standardised targets are clamped to ±this many stds (flat channels, artefact windows)."""

BANDPOWER_STATS: tuple[tuple[float, ...], tuple[float, ...]] = (
    (0.94, 0.63, 0.90, 0.68, -0.22, -0.60, -0.91, -0.64, -0.86, -1.77),
    (0.51, 0.42, 0.56, 0.37, 0.35, 0.37, 0.35, 0.37, 0.30, 0.38),
)
"""(means, stds) of the band-power features in the order of :func:`bandpower_features`: log10
power (µV²) of each band of ``BANDS_HZ``, then log10 relative power of each band (eegmat,
109,364 channel-patches)."""

CONNECTIVITY_STATS: tuple[tuple[float, ...], tuple[float, ...]] = (
    (0.28, 0.16),
    (0.30, 0.18),
)
"""(means, stds) of the envelope correlation of each band of ``CONNECTIVITY_BANDS`` between
two different channels (eegmat, 246,069 channel pairs of 4-s windows)."""


def feature_stats(
    stats: tuple[tuple[float, ...], tuple[float, ...]], device: torch.device | None = None
) -> torch.Tensor:
    """``(2, n_features)`` tensor of (means, stds), e.g. of ``BANDPOWER_STATS``."""
    return torch.tensor(stats, dtype=torch.float32, device=device)


def _zero_invalid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 with invalid channels set to exact zeros (NaN padding included)."""
    x = x.float()
    return torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))


def _band_members(freqs: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """``(n_bands, F)`` float: 1 where a frequency bin lies in a band."""
    # one comparison per band on the device: the edges are Python floats, never host tensors
    return torch.stack(
        [(freqs >= BANDS_HZ[name][0]) & (freqs < BANDS_HZ[name][1]) for name in names]
    ).float()


def patch_psd(x: torch.Tensor, valid: torch.Tensor, *, sfreq_hz: float,
              patch_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-sided PSD (µV²/Hz) of every patch: Hann window, patch mean removed.

    Returns ``psd (B, C, P, patch_len // 2 + 1)`` and its frequencies ``(F,)`` Hz; the
    definition of ``scipy.signal.periodogram(window="hann", detrend="constant",
    scaling="density")`` for every bin except DC and Nyquist (not doubled there).
    """
    B, C, T = x.shape
    patches = _zero_invalid(x, valid).reshape(B, C, T // patch_len, patch_len)
    patches = patches - patches.mean(dim=-1, keepdim=True)
    window = torch.hann_window(patch_len, periodic=True, device=x.device)
    spectrum = torch.fft.rfft(patches * window, dim=-1)
    psd = spectrum.real.square() + spectrum.imag.square()
    psd = psd * (2.0 / (sfreq_hz * window.square().sum()))
    freqs = torch.fft.rfftfreq(patch_len, d=1.0 / sfreq_hz, device=x.device)
    return psd, freqs


def band_power(x: torch.Tensor, valid: torch.Tensor, *, sfreq_hz: float,
               patch_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel and patch: ``(log10 band power µV², relative power)``, each ``(B, C, P, 5)``.

    Band power is the PSD of :func:`patch_psd` summed over the bins of each ``BANDS_HZ`` band
    times the bin width; relative power divides it by the total over 1–45 Hz. Invalid channels
    give 0 in both.
    """
    psd, freqs = patch_psd(x, valid, sfreq_hz=sfreq_hz, patch_len=patch_len)
    members = _band_members(freqs, tuple(BANDS_HZ))  # (n_bands, F)
    power = psd @ members.T * (sfreq_hz / patch_len)  # (B, C, P, n_bands) µV²
    total = power.sum(dim=-1, keepdim=True).clamp_min(POWER_FLOOR_UV2)
    log_power = torch.log10(power + POWER_FLOOR_UV2)
    keep = valid[:, :, None, None]
    return torch.where(keep, log_power, 0.0), torch.where(keep, power / total, 0.0)


def envelope_correlation(x: torch.Tensor, valid: torch.Tensor, *, sfreq_hz: float,
                         bands: tuple[str, ...] = CONNECTIVITY_BANDS) -> torch.Tensor:
    """Amplitude-envelope correlation between channels: ``(B, n_bands, C, C)``.

    Per band: the window (channel mean removed) is band-passed by zeroing its rFFT outside
    ``[low, high)`` Hz, the analytic signal is the inverse FFT of twice the kept positive
    frequencies (what ``scipy.signal.hilbert`` gives for the band-passed signal), the envelope
    is its modulus, and the Pearson correlation is taken over time, leaving out
    ``ENVELOPE_EDGE_S`` at each end. Pairs with an invalid channel give 0; the diagonal of a
    valid channel is 1 (0 for a flat one).
    """
    T = x.shape[-1]
    signal = _zero_invalid(x, valid)
    signal = signal - signal.mean(dim=-1, keepdim=True)
    spectrum = torch.fft.rfft(signal, dim=-1)  # (B, C, F)
    freqs = torch.fft.rfftfreq(T, d=1.0 / sfreq_hz, device=x.device)
    members = _band_members(freqs, bands)[:, None, :]  # (n_bands, 1, F)
    # ifft with n = T zero-fills the negative frequencies: the analytic signal of the band
    analytic = torch.fft.ifft(2.0 * spectrum[:, None] * members, n=T, dim=-1)
    # |z| from its parts: complex abs() is hypot, about 3x slower on CPU
    envelope = (analytic.real.square() + analytic.imag.square()).sqrt()  # (B, n_bands, C, T)
    edge = min(round(ENVELOPE_EDGE_S * sfreq_hz), (T - 2) // 4)
    envelope = envelope[..., edge:T - edge]
    centred = envelope - envelope.mean(dim=-1, keepdim=True)
    covariance = centred @ centred.transpose(-1, -2)
    std = covariance.diagonal(dim1=-2, dim2=-1).clamp_min(0.0).sqrt()
    # a flat channel has zero variance: its correlations are 0, not 0/0
    scale = (std[..., :, None] * std[..., None, :]).clamp_min(1e-12)
    pair = (valid[:, :, None] & valid[:, None, :])[:, None]
    return torch.where(pair, covariance / scale, 0.0)


def bandpower_features(x: torch.Tensor, valid: torch.Tensor, stats: torch.Tensor, *,
                       sfreq_hz: float, patch_len: int) -> torch.Tensor:
    """Standardised band-power targets ``(B, C, P, 10)``: log10 power, log10 relative power.

    Relative power enters as its log: on eegmat the gamma fraction is skewed (skewness 4.3),
    its log is not (-0.04), and a squared error on the log weighs a halving alike in every band.

    ``stats (2, 10)``: fixed (means, stds), :func:`feature_stats` of ``BANDPOWER_STATS``.
    Invalid channels give 0.
    """
    log_power, relative = band_power(x, valid, sfreq_hz=sfreq_hz, patch_len=patch_len)
    log_relative = torch.log10(relative.clamp_min(RELATIVE_FLOOR))
    features = (torch.cat([log_power, log_relative], dim=-1) - stats[0]) / stats[1]
    features = features.clamp(-TARGET_CLIP, TARGET_CLIP)
    return torch.where(valid[:, :, None, None], features, 0.0)


def connectivity_features(x: torch.Tensor, valid: torch.Tensor, stats: torch.Tensor, *,
                          sfreq_hz: float) -> torch.Tensor:
    """Standardised envelope-correlation targets ``(B, n_bands, C, C)``.

    ``stats (2, n_bands)``: fixed (means, stds), :func:`feature_stats` of
    ``CONNECTIVITY_STATS``. Pairs with an invalid channel give 0 (the diagonal is not a
    target).
    """
    correlation = envelope_correlation(x, valid, sfreq_hz=sfreq_hz)
    features = (correlation - stats[0, :, None, None]) / stats[1, :, None, None]
    features = features.clamp(-TARGET_CLIP, TARGET_CLIP)
    pair = (valid[:, :, None] & valid[:, None, :])[:, None]
    return torch.where(pair, features, 0.0)


def pair_weight(valid: torch.Tensor) -> torch.Tensor:
    """``(B, 1, C, C)`` float: 1 for two different valid channels, the entries of the loss."""
    C = valid.shape[1]
    off_diagonal = ~torch.eye(C, dtype=torch.bool, device=valid.device)
    return (valid[:, :, None] & valid[:, None, :] & off_diagonal)[:, None].float()


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries of ``weight`` (broadcast over trailing features)."""
    weight = weight.expand_as(target)
    return ((pred - target).square() * weight).sum() / weight.sum().clamp_min(1.0)


def mean_baseline(target: torch.Tensor, weight: torch.Tensor, dims: tuple[int, ...]
                  ) -> torch.Tensor:
    """Loss of predicting each feature's mean over the weighted entries: their variance.

    ``dims``: the dimensions that index entries (pooled into one mean); the others index
    features, each with its own mean.
    """
    weight = weight.expand_as(target)
    count = weight.sum(dim=dims, keepdim=True).clamp_min(1.0)
    mean = (target * weight).sum(dim=dims, keepdim=True) / count
    return ((target - mean).square() * weight).sum() / weight.sum().clamp_min(1.0)
