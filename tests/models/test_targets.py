"""Neuro-statistics targets: against SciPy on real eegmat windows, padding, learning, options.

Windows come from eegmat subjects 00 and 01 converted to shards with the default prep (200 Hz,
19 channels, µV).
"""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
import scipy.signal
import torch
from eegmat_shards import prep_eegmat_subjects

from eegfm.models import MaskedPretrainer, create_model
from eegfm.models.targets import (
    BANDPOWER_STATS,
    BANDS_HZ,
    CONNECTIVITY_BANDS,
    CONNECTIVITY_STATS,
    ENVELOPE_EDGE_S,
    POWER_FLOOR_UV2,
    RELATIVE_FLOOR,
    TARGET_CLIP,
    band_power,
    bandpower_features,
    connectivity_features,
    envelope_correlation,
    feature_stats,
)
from eegfm.shards import ShardReader

SFREQ = 200.0
PATCH = 200
WINDOW = 800  # 4 s
TARGET_PARTS = {"loss_bandpower", "loss_bandpower_mean", "loss_bandpower_masked",
                "loss_bandpower_visible", "loss_connectivity", "loss_connectivity_mean"}


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory, eegmat_dir: Path) -> ShardReader:
    """Shards of eegmat subjects 00 and 01 (rest and arithmetic recordings)."""
    mne.set_log_level("ERROR")
    return ShardReader(prep_eegmat_subjects(tmp_path_factory, eegmat_dir, ["00", "01"]))


def _windows(reader: ShardReader, n: int, generator: torch.Generator, *, part: str = "all"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random 4-s windows ``(x (n, C, T) µV, coords (n, C, 3))`` from the first 75 % of
    each recording (``part='train'``), its last 25 % (``'held_out'``) or anywhere."""
    xs, coords = [], []
    for _ in range(n):
        entry = reader.entries[int(torch.randint(len(reader.entries), (1,), generator=generator))]
        cut = int(0.75 * entry.n_samples)
        low, high = {"train": (0, cut), "held_out": (cut, entry.n_samples),
                     "all": (0, entry.n_samples)}[part]
        start = low + int(torch.randint(high - low - WINDOW, (1,), generator=generator))
        window = reader.read_window(entry.recording_id, start, WINDOW)
        xs.append(torch.as_tensor(window.data))
        coords.append(torch.as_tensor(window.coords))
    return torch.stack(xs), torch.stack(coords)


def _reference_band_power(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log10 band power µV², relative power) per patch from scipy.signal.periodogram."""
    patches = x.reshape(*x.shape[:2], -1, PATCH).astype(np.float64)
    freqs, psd = scipy.signal.periodogram(patches, fs=SFREQ, window="hann", detrend="constant",
                                          scaling="density", axis=-1)
    power = np.stack([psd[..., (freqs >= low) & (freqs < high)].sum(-1) * (freqs[1] - freqs[0])
                      for low, high in BANDS_HZ.values()], axis=-1)
    total = np.maximum(power.sum(-1, keepdims=True), POWER_FLOOR_UV2)
    return np.log10(power + POWER_FLOOR_UV2), power / total


def _reference_envelope_correlation(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """(B, C, C) Pearson correlation of Hilbert envelopes after an rFFT band-pass."""
    x = x.astype(np.float64)
    x = x - x.mean(-1, keepdims=True)
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / SFREQ)
    band = np.fft.irfft(np.fft.rfft(x, axis=-1) * ((freqs >= low) & (freqs < high)),
                        n=x.shape[-1], axis=-1)
    edge = round(ENVELOPE_EDGE_S * SFREQ)
    envelope = np.abs(scipy.signal.hilbert(band, axis=-1))[..., edge:-edge]
    return np.stack([np.corrcoef(sample) for sample in envelope])


def test_band_power_matches_scipy_periodogram_on_real_windows(reader):
    x, _ = _windows(reader, 6, torch.Generator().manual_seed(0))
    valid = torch.ones(x.shape[:2], dtype=torch.bool)
    log_power, relative = band_power(x, valid, sfreq_hz=SFREQ, patch_len=PATCH)
    ref_log, ref_relative = _reference_band_power(x.numpy())
    assert log_power.shape == (6, 19, 4, 5)
    # float32 FFT against float64: 1e-4 decades is 0.02 % of the power
    np.testing.assert_allclose(log_power.numpy(), ref_log, atol=1e-4, rtol=0)
    np.testing.assert_allclose(relative.numpy(), ref_relative, atol=1e-5, rtol=1e-4)
    # the standardised targets are those values through the fixed constants, clamped
    mean, std = (np.array(values) for values in BANDPOWER_STATS)
    ref_features = np.concatenate(
        [ref_log, np.log10(np.maximum(ref_relative, RELATIVE_FLOOR))], axis=-1)
    ref_features = np.clip((ref_features - mean) / std, -TARGET_CLIP, TARGET_CLIP)
    features = bandpower_features(x, valid, feature_stats(BANDPOWER_STATS), sfreq_hz=SFREQ,
                                  patch_len=PATCH)
    np.testing.assert_allclose(features.numpy(), ref_features, atol=1e-3, rtol=0)
    # O(1) on eegmat, which the constants come from
    assert abs(float(features.mean())) < 0.5 and 0.5 < float(features.std()) < 1.5


def test_envelope_correlation_matches_scipy_hilbert_on_real_windows(reader):
    x, _ = _windows(reader, 6, torch.Generator().manual_seed(1))
    valid = torch.ones(x.shape[:2], dtype=torch.bool)
    correlation = envelope_correlation(x, valid, sfreq_hz=SFREQ)
    assert correlation.shape == (6, len(CONNECTIVITY_BANDS), 19, 19)
    upper = np.triu_indices(19, 1)
    for k, name in enumerate(CONNECTIVITY_BANDS):
        reference = _reference_envelope_correlation(x.numpy(), *BANDS_HZ[name])
        np.testing.assert_allclose(correlation[:, k].numpy(), reference, atol=1e-4, rtol=0)
        # the brick-wall FFT band-pass is close to a textbook 4th-order Butterworth (filtfilt)
        sos = scipy.signal.butter(4, BANDS_HZ[name], btype="band", fs=SFREQ, output="sos")
        edge = round(ENVELOPE_EDGE_S * SFREQ)
        iir = np.abs(scipy.signal.hilbert(scipy.signal.sosfiltfilt(sos, x.numpy(), axis=-1),
                                          axis=-1))[..., edge:-edge]
        textbook = np.stack([np.corrcoef(sample) for sample in iir])[:, upper[0], upper[1]]
        ours = correlation[:, k, upper[0], upper[1]].numpy()
        assert np.abs(ours - textbook).mean() < 0.08, name
        assert np.corrcoef(ours.ravel(), textbook.ravel())[0, 1] > 0.9, name
    mean, std = (np.array(values)[:, None, None] for values in CONNECTIVITY_STATS)
    features = connectivity_features(x, valid, feature_stats(CONNECTIVITY_STATS), sfreq_hz=SFREQ)
    expected = np.clip((correlation.numpy() - mean) / std, -TARGET_CLIP, TARGET_CLIP)
    np.testing.assert_allclose(features.numpy(), expected, atol=1e-5, rtol=0)


def test_targets_ignore_padded_channels_and_each_patch_is_its_own(reader):
    x, coords = _windows(reader, 2, torch.Generator().manual_seed(2))
    bp_stats, conn_stats = feature_stats(BANDPOWER_STATS), feature_stats(CONNECTIVITY_STATS)

    def targets(x, valid):
        return (bandpower_features(x, valid, bp_stats, sfreq_hz=SFREQ, patch_len=PATCH),
                connectivity_features(x, valid, conn_stats, sfreq_hz=SFREQ))

    alone = [targets(x[i:i + 1, :n], torch.ones(1, n, dtype=torch.bool))
             for i, n in enumerate((19, 11))]
    # sample 1 keeps 11 channels; the rest is padding holding NaN and 1e6 µV of garbage
    padded = x.clone()
    padded[1, 11:15] = float("nan")
    padded[1, 15:] = 1e6
    valid = torch.ones(2, 19, dtype=torch.bool)
    valid[1, 11:] = False
    bandpower, connectivity = targets(padded, valid)
    for i, n in enumerate((19, 11)):
        torch.testing.assert_close(bandpower[i:i + 1, :n], alone[i][0])
        torch.testing.assert_close(connectivity[i:i + 1, :, :n, :n], alone[i][1])
    assert bandpower[1, 11:].eq(0).all() and connectivity[1, :, 11:].eq(0).all()
    assert connectivity[1, :, :, 11:].eq(0).all()
    # no padded patches exist in eegfm batches; each patch's band power is its own: the first
    # two patches of a 4-s window give the targets of the 2-s window they form
    first_half, _ = targets(x[:, :, :400], torch.ones(2, 19, dtype=torch.bool))
    torch.testing.assert_close(bandpower[:1, :, :2], first_half[:1, :, :2])

    # in the pretrainer, padding reaches neither the targets nor the losses: NaN padding would
    # make any loss it entered NaN, and two different paddings give the same losses
    torch.manual_seed(0)
    pretrainer = MaskedPretrainer(create_model("eegfm_tiny"), bandpower_weight=1.0,
                                  connectivity_weight=1.0).eval()
    other = padded.clone()
    other[1, 11:] = -3e5
    with torch.no_grad():
        results = [pretrainer(signal, coords, valid, generator=torch.Generator().manual_seed(0))
                   for signal in (padded, other)]
    (loss, parts), (other_loss, other_parts) = results
    assert torch.isfinite(loss) and set(parts) >= TARGET_PARTS
    torch.testing.assert_close(loss, other_loss)
    for name in TARGET_PARTS:
        torch.testing.assert_close(parts[name], other_parts[name])


def test_pretraining_with_all_targets_beats_the_mean_on_held_out_windows(reader):
    """250 AdamW steps of eegfm_tiny on windows from the first 75 % of each recording; on 32
    windows of the last 25 %, each target's loss is well below predicting its mean."""
    torch.manual_seed(0)
    pretrainer = MaskedPretrainer(create_model("eegfm_tiny"), bandpower_weight=1.0,
                                  connectivity_weight=1.0)
    optimizer = torch.optim.AdamW(pretrainer.parameters(), lr=3e-3, weight_decay=0.01)
    x_eval, coords_eval = _windows(reader, 32, torch.Generator().manual_seed(3), part="held_out")

    def evaluate() -> dict[str, float]:
        pretrainer.eval()
        with torch.no_grad():
            _, parts = pretrainer(x_eval, coords_eval, generator=torch.Generator().manual_seed(4))
        pretrainer.train()
        return {name: float(value) for name, value in parts.items()}

    before = evaluate()
    generator = torch.Generator().manual_seed(0)
    for _ in range(250):
        loss, _ = pretrainer(*_windows(reader, 8, generator, part="train"), generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate()
    for target in ("bandpower", "connectivity"):
        assert after[f"loss_{target}_mean"] == pytest.approx(before[f"loss_{target}_mean"])
        assert after[f"loss_{target}"] < 0.85 * after[f"loss_{target}_mean"], (before, after)
        assert after[f"loss_{target}"] < before[f"loss_{target}"], (before, after)
    print({name: round(value, 3) for name, value in after.items()})


def test_disabled_targets_create_no_parameters_and_exports_hold_the_encoder_only():
    torch.manual_seed(0)
    plain = MaskedPretrainer(create_model("eegfm_tiny"))
    assert plain.bandpower_head is None and plain.connectivity_head is None
    assert not any("bandpower" in key or "connectivity" in key for key in plain.state_dict())
    x = 20 * torch.randn(2, 5, WINDOW, generator=torch.Generator().manual_seed(0))
    coords = 0.05 * torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(1))
    _, parts = plain(x, coords)
    assert not TARGET_PARTS & set(parts)

    torch.manual_seed(0)
    full = MaskedPretrainer(create_model("eegfm_tiny"), bandpower_weight=0.5,
                            connectivity_weight=2.0, connectivity_rank=4)
    added = set(full.state_dict()) - set(plain.state_dict())
    assert added and all(key.split(".")[0] in ("bandpower_head", "connectivity_head")
                         for key in added)
    # the fixed constants are buffers outside the state dict: a checkpoint of a run without
    # targets loads into one with them, heads aside, and the encoder's weights are the same set
    missing, unexpected = full.load_state_dict(plain.state_dict(), strict=False)
    assert set(missing) == added and not unexpected
    assert set(full.encoder.state_dict()) == set(plain.encoder.state_dict())
    loss, parts = full(x, coords)
    assert set(parts) >= TARGET_PARTS
    torch.testing.assert_close(loss, parts["loss_mse"] + 0.5 * parts["loss_bandpower"]
                               + 2.0 * parts["loss_connectivity"])
    loss.backward()
    heads = [*full.bandpower_head.parameters(), *full.connectivity_head.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads)
    with pytest.raises(ValueError, match="bandpower_weight"):
        MaskedPretrainer(create_model("eegfm_tiny"), bandpower_weight=-1.0)
    with pytest.raises(ValueError, match="bandpower_tokens"):
        MaskedPretrainer(create_model("eegfm_tiny"), bandpower_tokens="visible")


def test_bandpower_on_masked_tokens_only():
    torch.manual_seed(0)
    pretrainer = MaskedPretrainer(create_model("eegfm_tiny"), bandpower_weight=1.0,
                                  bandpower_tokens="masked")
    x = 20 * torch.randn(2, 6, WINDOW, generator=torch.Generator().manual_seed(0))
    coords = 0.05 * torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(1))
    loss, parts = pretrainer(x, coords, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(parts["loss_bandpower"], parts["loss_bandpower_masked"])
    torch.testing.assert_close(loss, parts["loss_mse"] + parts["loss_bandpower"])


def test_config_with_targets_parses_and_builds(tmp_path: Path):
    """`--model.pretrainer.*` reaches MaskedPretrainer through `eegfm pretrain`'s LightningCLI
    (built in-process from tiny.yaml: parsed, module and trainer instantiated, nothing run)."""
    from eegfm.cli.pretrain import build_cli

    root = Path(__file__).resolve().parents[2]
    cli = build_cli(["--config", str(root / "configs" / "pretrain" / "tiny.yaml"),
                     "--data", str(tmp_path), "--run_dir", str(tmp_path / "run"),
                     "--model.pretrainer.bandpower_weight", "1.0",
                     "--model.pretrainer.connectivity_weight", "0.5"])
    assert cli.config["model"]["pretrainer"] == {"bandpower_weight": 1.0,
                                                 "connectivity_weight": 0.5}
    pretrainer = cli.model.pretrainer
    assert pretrainer.bandpower_weight == 1.0 and pretrainer.bandpower_head is not None
    assert pretrainer.connectivity_weight == 0.5 and pretrainer.connectivity_head is not None
