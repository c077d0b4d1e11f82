"""Signal augmentations for the two views of the joint-embedding loss (braindecode transforms).

The fine-tuning harness cuts two temporally neighbouring windows of the same recording and
passes each through a :class:`ViewAugmenter` before the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class ViewAugmenter:
    """Apply braindecode transforms to ``x (B, C, T)`` in units of each channel's RMS.

    Dividing by the per-channel RMS first makes the noise level relative and the transforms
    independent of the signal's unit (µV); the RMS is multiplied back afterwards, and padded
    channels (``channel_mask`` False) stay zero.
    """

    def __init__(self, transforms: Sequence[torch.nn.Module], eps: float = 1e-6):
        self.transforms = list(transforms)
        self.eps = eps

    def __call__(self, x: torch.Tensor, channel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Augmented copy of ``x (B, C, T)``."""
        if x.dim() != 3:
            raise ValueError(f"augmentation expects x (B, C, T), got shape {tuple(x.shape)}")
        for transform in self.transforms:
            if getattr(transform, "mask_len_samples", 0) >= x.shape[-1]:
                raise ValueError(f"time mask of {transform.mask_len_samples} samples does not fit "
                                 f"a window of {x.shape[-1]}: lower time_mask_s")
        with torch.no_grad():
            rms = x.float().pow(2).mean(-1, keepdim=True).sqrt().clamp_min(self.eps)
            out = x.float() / rms
            for transform in self.transforms:
                out = transform(out)
            out = out * rms
            if channel_mask is not None:
                out = out * channel_mask.to(out.dtype)[..., None]
        return out.to(x.dtype)

    def __repr__(self) -> str:
        return f"ViewAugmenter({', '.join(type(t).__name__ for t in self.transforms)})"


def make_view_augmenter(sfreq: float, seed: int = 0, *, probability: float = 0.5,
                        noise_std: float = 0.1, time_mask_s: float = 0.25,
                        channel_drop: float = 0.2, max_freq_shift_hz: float = 2.0,
                        amplitude_range: tuple[float, float] = (0.5, 2.0)) -> ViewAugmenter:
    """Random view augmentation from braindecode: noise, smooth time mask, channel dropout,
    frequency shift and amplitude scaling, each applied to a sample with ``probability``.

    ``noise_std`` is relative to each channel's RMS; a zero (or empty range) disables a
    transform. Seeded: the same ``seed`` gives the same augmentations for the same inputs.
    """
    # braindecode's package import is slow (it loads every model); import only when needed.
    from braindecode.augmentation import (
        AmplitudeScale,
        ChannelsDropout,
        FrequencyShift,
        GaussianNoise,
        SmoothTimeMask,
    )

    if sfreq <= 0 or not 0.0 <= probability <= 1.0:
        raise ValueError(f"need sfreq > 0 and probability in [0, 1], got {sfreq}, {probability}")
    if max_freq_shift_hz >= sfreq / 2:
        raise ValueError(f"max_freq_shift_hz={max_freq_shift_hz} must be below Nyquist "
                         f"({sfreq / 2} Hz)")
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(5)]
    transforms: list[torch.nn.Module] = []
    if noise_std > 0:
        transforms.append(GaussianNoise(probability, std=noise_std, random_state=seeds[0]))
    mask_len = round(time_mask_s * sfreq)
    if mask_len > 0:
        transforms.append(SmoothTimeMask(probability, mask_len_samples=mask_len,
                                         random_state=seeds[1]))
    if channel_drop > 0:
        transforms.append(ChannelsDropout(probability, p_drop=channel_drop,
                                          random_state=seeds[2]))
    if max_freq_shift_hz > 0:
        transforms.append(FrequencyShift(probability, sfreq=sfreq,
                                         max_delta_freq=max_freq_shift_hz,
                                         random_state=seeds[3]))
    low, high = amplitude_range
    if high > low:
        transforms.append(AmplitudeScale(probability, interval=(low, high),
                                         random_state=seeds[4]))
    return ViewAugmenter(transforms)
