"""View augmentation on a real eegmat recording, and heads fed with tokens from real EEG."""

from __future__ import annotations

import mne
import pytest
import torch

from eegfm.heads import create_head, make_view_augmenter

SFREQ = 500.0


@pytest.fixture(scope="module")
def eegmat_windows(eegmat_dir) -> torch.Tensor:
    """Four 2-s windows (4, 19, 1000) in µV of the 19 scalp channels of Subject00 (arithmetic)."""
    raw = mne.io.read_raw_edf(eegmat_dir / "Subject00_2.edf", preload=False, verbose="error")
    scalp = [name for name in raw.ch_names if name not in ("EEG A2-A1", "ECG ECG")]
    assert raw.info["sfreq"] == SFREQ and len(scalp) == 19
    data = raw.get_data(picks=scalp, start=0, stop=8000, units="uV")
    windows = torch.from_numpy(data).float().view(19, 4, 2000)[..., :1000].permute(1, 0, 2)
    return windows.contiguous()


def test_augmenter_changes_real_eeg_reproducibly_and_keeps_padding(eegmat_windows):
    x = torch.cat([eegmat_windows, torch.zeros(4, 3, 1000)], dim=1)  # 3 padded channels
    mask = torch.ones(4, 22, dtype=torch.bool)
    mask[:, 19:] = False
    augment = make_view_augmenter(SFREQ, seed=3, probability=1.0)
    out = augment(x, mask)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert not torch.allclose(out[:, :19], x[:, :19])
    assert torch.equal(out[:, 19:], torch.zeros(4, 3, 1000))
    again = make_view_augmenter(SFREQ, seed=3, probability=1.0)(x, mask)
    assert torch.equal(out, again)
    other = make_view_augmenter(SFREQ, seed=4, probability=1.0)(x, mask)
    assert not torch.equal(out, other)
    # Relative to channel RMS: a signal in volts gets the same augmentation as in µV.
    in_volts = make_view_augmenter(SFREQ, seed=3, probability=1.0)(x * 1e-6, mask)
    torch.testing.assert_close(in_volts * 1e6, out, rtol=1e-4, atol=1e-3)
    assert "GaussianNoise" in repr(augment) and "FrequencyShift" in repr(augment)


def test_augmenter_with_zero_probability_is_identity(eegmat_windows):
    augment = make_view_augmenter(SFREQ, seed=0, probability=0.0)
    torch.testing.assert_close(augment(eegmat_windows), eegmat_windows)


def test_augmenter_rejects_bad_settings(eegmat_windows):
    with pytest.raises(ValueError, match="Nyquist"):
        make_view_augmenter(100.0, max_freq_shift_hz=60.0)
    with pytest.raises(ValueError, match="time_mask_s"):
        make_view_augmenter(SFREQ, time_mask_s=4.0)(eegmat_windows)
    with pytest.raises(ValueError, match=r"\(B, C, T\)"):
        make_view_augmenter(SFREQ)(eegmat_windows[0])


@pytest.mark.parametrize("name", ["linear", "mlp", "shared_routed"])
def test_heads_train_on_tokens_from_real_eeg_views(eegmat_windows, name):
    """Tokens: 0.2-s patches of two augmented views, projected to 16 features (a stand-in for
    the encoder), with padded channels — the shapes and masks the fine-tuning harness passes."""
    gen = torch.Generator().manual_seed(0)
    projection = torch.randn(100, 16, generator=gen) / 100
    mask = torch.ones(4, 22, dtype=torch.bool)
    mask[:, 19:] = False

    def tokens_of(x: torch.Tensor) -> torch.Tensor:
        padded = torch.cat([x, torch.zeros(4, 3, 1000)], dim=1)
        return padded.view(4, 22, 10, 100) @ projection

    views = [make_view_augmenter(SFREQ, seed=s)(eegmat_windows) for s in (1, 2)]
    head = create_head(name, 16, 2, spiking="lif")
    subject = torch.tensor([0, 0, 1, 1])
    head.init_from_features(head.pool(tokens_of(views[0]), mask), subject)
    out = head.training_loss(tokens_of(views[0]), mask, torch.tensor([0, 1, 0, 1]),
                             subject=subject, pair_tokens=tokens_of(views[1]),
                             pair_channel_mask=mask)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.logits.shape == (4, 2)
