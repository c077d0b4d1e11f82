"""DBConformer: shapes, gradients, braindecode's EEGModuleMixin contract, a fit on real eegmat."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
import torch
from braindecode import EEGClassifier

from eegfm.models.dbconformer import DBConformer

SCALE_V = 50e-6  # eegmat is read in volts: 50 µV -> 1


@pytest.mark.parametrize(("n_chans", "n_times", "sfreq"), [
    (19, 800, 200.0), (1, 100, 100.0), (4, 500, 500.0), (1, 256, 256.0), (22, 1000, 250.0),
    (3, 1337, 500.0),
])
def test_output_shapes(n_chans, n_times, sfreq):
    torch.manual_seed(0)
    model = DBConformer(n_chans=n_chans, n_outputs=3, n_times=n_times, sfreq=sfreq)
    assert model(torch.randn(2, n_chans, n_times)).shape == (2, 3)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, n_chans, n_times))
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    assert model.n_tokens == n_times // model.patch_size >= 1


def test_sizes_scale_with_sfreq_and_match_the_paper_at_250_hz():
    paper = DBConformer(n_chans=22, n_outputs=2, n_times=1000, sfreq=250.0)
    assert (paper.temporal_kernel, paper.patch_size, paper.n_tokens) == (63, 125, 8)
    assert (paper.spatial_kernel, paper.spatial_stride) == (25, 5)
    no_rate = DBConformer(n_chans=22, n_outputs=2, n_times=1000)  # paper's 250 Hz assumed
    assert (no_rate.temporal_kernel, no_rate.patch_size) == (63, 125)
    low = DBConformer(n_chans=2, n_outputs=2, n_times=100, sfreq=100.0)
    assert (low.temporal_kernel, low.patch_size, low.n_tokens) == (25, 50, 2)
    short = DBConformer(n_chans=2, n_outputs=2, n_times=40, sfreq=100.0)
    assert short.patch_size == 40 and short.n_tokens == 1


def _gradients(model: DBConformer, n_chans: int, n_times: int) -> dict[str, torch.Tensor]:
    model.train()
    x = torch.randn(4, n_chans, n_times)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_every_parameter_gets_a_finite_nonzero_gradient():
    torch.manual_seed(0)
    model = DBConformer(n_chans=4, n_outputs=2, n_times=400, sfreq=100.0)
    for name, grad in _gradients(model, 4, 400).items():
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name


def test_single_channel_gradients_except_the_constant_channel_attention():
    # With one channel the softmax over channels is identically 1, so the channel-attention
    # scorer cannot influence the output: its gradient is exactly zero, and only there.
    torch.manual_seed(0)
    model = DBConformer(n_chans=1, n_outputs=2, n_times=200, sfreq=100.0)
    for name, grad in _gradients(model, 1, 200).items():
        assert grad is not None and torch.isfinite(grad).all(), name
        if name.startswith("channel_pool."):
            assert grad.abs().sum() == 0, name
        else:
            assert grad.abs().sum() > 0, name


def test_eeg_module_mixin_contract():
    info = mne.create_info([f"E{i}" for i in range(6)], 128.0, "eeg")
    model = DBConformer(n_outputs=4, chs_info=info["chs"], input_window_seconds=2.0, sfreq=128.0)
    assert (model.n_chans, model.n_times, model.sfreq) == (6, 256, 128.0)
    assert model.get_output_shape() == (1, 4)
    feats = model.eval()(torch.randn(2, 6, 256), return_features=True)
    assert feats["features"].shape == (2, 2 * model.emb_size)
    model.reset_head(5)
    assert model.n_outputs == 5 and model.get_output_shape() == (1, 5)
    with pytest.raises(ValueError, match="n_times"):
        model(torch.randn(1, 6, 512))
    with pytest.raises(ValueError, match="num_heads"):
        DBConformer(n_chans=2, n_outputs=2, n_times=200, sfreq=100.0, num_heads=3)


def _eegmat_epochs_100hz(eegmat_dir: Path, subject: str = "Subject00") -> tuple[np.ndarray, ...]:
    """4 s epochs at 100 Hz of rest (_1, label 0) and arithmetic (_2, label 1), 19 channels, V."""
    data, labels = [], []
    for run, label in (("1", 0), ("2", 1)):
        raw = mne.io.read_raw_edf(eegmat_dir / f"{subject}_{run}.edf", preload=True,
                                  verbose="error")
        raw.pick([name for name in raw.ch_names if name not in ("EEG A2-A1", "ECG ECG")])
        raw.resample(100.0, verbose="error")
        epochs = mne.make_fixed_length_epochs(raw, duration=4.0, preload=True, verbose="error")
        data.append(epochs.get_data())  # (N, 19, 400) volts
        labels.append(np.full(len(epochs), label))
    return np.concatenate(data), np.concatenate(labels)


def _train_set_loss(clf: EEGClassifier, X: np.ndarray, y: np.ndarray) -> float:
    """Cross-entropy of ``clf`` on ``(X, y)`` in eval mode (no dropout noise)."""
    proba = clf.predict_proba(X)
    return float(-np.log(proba[np.arange(len(y)), y]).mean())


def test_eegclassifier_fits_on_real_eegmat(eegmat_dir):
    X, y = _eegmat_epochs_100hz(eegmat_dir)  # 45 rest + 15 arithmetic epochs
    assert X.shape[1:] == (19, 400) and set(y) == {0, 1}
    X = (X / SCALE_V).astype(np.float32)  # (N, 19, 400), O(1)
    torch.manual_seed(0)
    clf = EEGClassifier(DBConformer, module__sfreq=100.0, max_epochs=3, batch_size=8,
                        train_split=None, optimizer=torch.optim.AdamW, optimizer__lr=1e-3,
                        verbose=0)
    clf.fit(X, y, epochs=0)  # builds the module from the data's shape, trains nothing
    module = clf.module_
    assert (module.n_chans, module.n_times, module.n_outputs) == (19, 400, 2)
    before = _train_set_loss(clf, X, y)
    clf.partial_fit(X, y)  # max_epochs=3 epochs on the same module
    losses = clf.history[:, "train_loss"]
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    assert _train_set_loss(clf, X, y) < before
    proba = clf.predict_proba(X[:7])
    assert proba.shape == (7, 2) and np.isfinite(proba).all()
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
