"""braindecode adapter: EEGClassifier on real eegmat epochs, names ignored, rates and windows."""

from __future__ import annotations

import mne
import numpy as np
import pytest
import torch
from braindecode import EEGClassifier

from eegfm.checkpoint import save_checkpoint
from eegfm.heads import LinearHead
from eegfm.models import create_model
from eegfm.models.braindecode_adapter import EEGFMModule, positions_from_chs_info

OLD_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}


def _eegmat_epochs(eegmat_dir, subject: str = "Subject00") -> tuple[mne.Epochs, np.ndarray]:
    """4 s epochs of rest (_1, label 0) and mental arithmetic (_2, label 1), 19 scalp channels."""
    epochs, labels = [], []
    for run, label in (("1", 0), ("2", 1)):
        raw = mne.io.read_raw_edf(eegmat_dir / f"{subject}_{run}.edf", preload=True,
                                  verbose="error")
        raw.pick([name for name in raw.ch_names if name not in ("EEG A2-A1", "ECG ECG")])
        names = {name: name.removeprefix("EEG ") for name in raw.ch_names}
        raw.rename_channels({old: OLD_NAMES.get(new, new) for old, new in names.items()})
        raw.set_montage("colin27_1020", verbose="error")
        cut = mne.make_fixed_length_epochs(raw, duration=4.0, preload=True, verbose="error")
        epochs.append(cut)
        labels.append(np.full(len(cut), label))
    return mne.concatenate_epochs(epochs, verbose="error"), np.concatenate(labels)


@pytest.fixture(scope="module")
def eegmat_epochs(eegmat_dir):
    return _eegmat_epochs(eegmat_dir)


def test_eegclassifier_fits_one_epoch_on_real_eegmat(eegmat_epochs):
    epochs, y = eegmat_epochs
    assert epochs.info["sfreq"] == 500.0  # resampled to 200 Hz inside the module
    torch.manual_seed(0)
    clf = EEGClassifier(EEGFMModule, module__model_name="eegfm_tiny", max_epochs=1,
                        batch_size=16, train_split=None, optimizer=torch.optim.AdamW,
                        optimizer__lr=1e-3, verbose=0)
    clf.fit(epochs, y)
    assert np.isfinite(clf.history[-1, "train_loss"])
    module = clf.module_
    assert module.n_chans == 19 and module.sfreq == 500.0 and module.n_outputs == 2
    proba = clf.predict_proba(epochs[:5])
    assert proba.shape == (5, 2) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_channel_names_never_reach_the_model(eegmat_epochs):
    epochs, _ = eegmat_epochs
    renamed = epochs.copy().rename_channels(
        {name: f"X{i}" for i, name in enumerate(epochs.ch_names)}, verbose="error")
    torch.manual_seed(0)
    original = EEGFMModule(n_outputs=2, chs_info=epochs.info["chs"], n_times=2000, sfreq=500.0)
    other = EEGFMModule(n_outputs=2, chs_info=renamed.info["chs"], n_times=2000, sfreq=500.0)
    other.load_state_dict(original.state_dict())
    X = torch.as_tensor(epochs.get_data(units="uV")[:3], dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(X), original.eval()(X), rtol=0, atol=0)


def _chs_info(n: int) -> list[dict]:
    montage = mne.channels.make_standard_montage("colin27_1020")
    info = mne.create_info(montage.ch_names[:n], 500.0, "eeg")
    info.set_montage(montage)
    return info["chs"]


@pytest.mark.parametrize(("sfreq", "n_times", "window", "patches"), [
    (500.0, 1000, "crop", 2), (500.0, 1100, "crop", 2), (500.0, 1100, "pad", 3),
    (200.0, 450, "crop", 2), (128.0, 512, "pad", 4), (200.0, 100, "pad", 1),
])
def test_rates_and_window_lengths(sfreq, n_times, window, patches):
    module = EEGFMModule(n_outputs=3, chs_info=_chs_info(8), n_times=n_times, sfreq=sfreq,
                         window=window)
    x = module.prepare_input(torch.randn(2, 8, n_times))
    assert x.shape == (2, 8, patches * 200)
    assert module(torch.randn(2, 8, n_times)).shape == (2, 3)


def test_too_short_crop_and_missing_positions_fail_clearly():
    module = EEGFMModule(n_outputs=2, chs_info=_chs_info(4), n_times=100, sfreq=200.0)
    with pytest.raises(ValueError, match="window='pad'"):
        module(torch.randn(1, 4, 100))
    info = mne.create_info(["A", "B"], 200.0, "eeg")
    with pytest.raises(ValueError, match="set_montage"):
        EEGFMModule(n_outputs=2, chs_info=info["chs"], n_times=400, sfreq=200.0)
    with pytest.raises(ValueError, match="chs_info"):
        EEGFMModule(n_outputs=2, n_chans=4, n_times=400, sfreq=200.0)


def test_channels_without_position_are_masked():
    chs = _chs_info(5)
    chs[2]["loc"][:3] = 0.0
    assert torch.isnan(positions_from_chs_info(chs)[2]).all()
    module = EEGFMModule(n_outputs=2, chs_info=chs, n_times=400, sfreq=200.0).eval()
    x = torch.randn(1, 5, 400)
    changed = x.clone()
    changed[0, 2] = 1e4 * torch.randn(400)
    with torch.no_grad():
        torch.testing.assert_close(module(changed), module(x))


def test_checkpoint_loading_and_linear_probe(tmp_path):
    torch.manual_seed(0)
    encoder = create_model("eegfm_tiny", depth=1)
    save_checkpoint(tmp_path / "encoder.pt", encoder)
    module = EEGFMModule(n_outputs=4, chs_info=_chs_info(6), n_times=400, sfreq=200.0,
                         checkpoint=tmp_path / "encoder.pt", freeze_encoder=True)
    assert len(module.encoder.blocks) == 1
    loaded = module.encoder.state_dict()
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(loaded[key], value)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {"head.norm.weight", "head.norm.bias", "head.classifier.weight",
                         "head.classifier.bias"}


def test_the_head_is_an_eegfm_heads_linear_head_on_the_tokens():
    """One head path: the adapter's logits are ``create_head("linear")`` on the encoder's
    tokens and valid-channel mask, as in fine-tuning; ``reset_head`` swaps it (braindecode)."""
    chs = _chs_info(5)
    chs[3]["loc"][:3] = 0.0  # no position: left out of the pooling
    torch.manual_seed(0)
    module = EEGFMModule(n_outputs=3, chs_info=chs, n_times=400, sfreq=200.0).eval()
    assert isinstance(module.head, LinearHead) and module.head.config["n_classes"] == 3
    x = torch.randn(2, 5, 400)
    coords = module.coords.expand(2, -1, -1)
    with torch.no_grad():
        tokens = module.encoder.forward_features(x, coords)
        mask = torch.tensor([True, True, True, False, True]).expand(2, -1)
        torch.testing.assert_close(module(x), module.head(tokens, mask), rtol=0, atol=0)
    module.reset_head(4)
    assert module.n_outputs == 4 and module(x).shape == (2, 4)
    regression = EEGFMModule(n_outputs=1, chs_info=chs, n_times=400, sfreq=200.0)
    assert regression(x).shape == (2, 1)  # braindecode's EEGRegressor: one output
