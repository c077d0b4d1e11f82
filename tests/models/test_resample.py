"""Band-limited resampling used by the braindecode adapter."""

from __future__ import annotations

import math

import pytest
import torch

from eegfm.models.resample import resample


@pytest.mark.parametrize("orig_hz", [100, 250, 256, 500, 512, 1000])
def test_resampled_tones_match_the_analytic_signal(orig_hz):
    t = torch.arange(orig_hz * 4, dtype=torch.float64) / orig_hz
    tone = lambda s: torch.sin(2 * math.pi * 10 * s) + 0.5 * torch.cos(2 * math.pi * 23 * s)  # noqa: E731
    out = resample(tone(t), orig_hz, 200)
    assert out.shape[-1] == 800
    expected = tone(torch.arange(800, dtype=torch.float64) / 200)
    assert (out - expected)[20:-20].abs().max() < 2e-3


def test_frequencies_above_the_new_nyquist_are_removed():
    t = torch.arange(2000) / 500.0
    out = resample(torch.sin(2 * math.pi * 120 * t)[None, None], 500, 200)
    assert out.shape == (1, 1, 800)
    assert out[..., 50:-50].abs().max() < 0.02


def test_same_rate_is_identity_and_bad_rates_fail():
    x = torch.randn(2, 3, 400)
    assert resample(x, 200, 200) is x
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 200)
