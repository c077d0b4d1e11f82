"""The classical baselines against a direct scipy / scikit-learn / pyriemann computation on real
eegmat windows."""

from __future__ import annotations

import numpy as np
import pytest
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from pyriemann.utils.base import invsqrtm
from pyriemann.utils.mean import mean_riemann
from scipy.signal import welch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from eegfm.evaluation.classical import (
    BANDS,
    C_GRID,
    band_power,
    classical_features,
    classical_pipeline,
    fit_with_validation,
    logistic_as_linear,
    logistic_probe,
)

TRAIN, VAL, TEST = ["00", "01", "02", "03"], ["04"], ["05"]


def _rows(task, subjects):
    return np.flatnonzero(np.isin(task.subject, subjects))


def test_band_power_equals_welch_by_hand(eegmat_windows):
    task = eegmat_windows
    features = band_power(task.x[:3], task.sfreq)
    assert features.shape == (3, 19, len(BANDS))
    freqs, psd = welch(task.x[2, 7].astype(np.float64), fs=200.0, nperseg=200)
    alpha = psd[(freqs >= 8) & (freqs < 13)].mean()
    np.testing.assert_allclose(features[2, 7, list(BANDS).index("alpha")], np.log10(alpha),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="holds no frequency bin"):
        band_power(task.x[:1], task.sfreq, {"narrow": (10.2, 10.4)})


def _lr(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=2000, class_weight="balanced")


def _direct_lr(train_x, train_y, val_x, val_y, test_x, all_x, all_y):
    """C chosen on validation, refit on train + validation, test probabilities."""
    scores = []
    for c in C_GRID:
        model = _lr(c).fit(train_x, train_y)
        scores.append(balanced_accuracy_score(val_y, model.predict(val_x)))
    best = C_GRID[int(np.argmax(scores))]
    return _lr(best).fit(all_x, all_y).predict_proba(test_x)


@pytest.mark.parametrize("aligned", [False, True])
def test_band_power_lr_equals_scikit_learn(eegmat_windows, aligned: bool):
    task = eegmat_windows
    train, val, test = (_rows(task, s) for s in (TRAIN, VAL, TEST))
    features = classical_features("bandpower", task.x, task.subject, task.sfreq, aligned=aligned)
    model, _ = fit_with_validation(classical_pipeline("bandpower"), features, task.y, train, val)
    # by hand: log10 Welch band power, per-subject z-score when aligned, scaler + LR
    freqs, psd = welch(task.x.astype(np.float64), fs=task.sfreq, nperseg=200, axis=-1)
    direct = np.stack([np.log10(psd[..., (freqs >= lo) & (freqs < hi)].mean(-1) + 1e-12)
                       for lo, hi in BANDS.values()], -1).reshape(len(task), -1)
    if aligned:
        for s in np.unique(task.subject):
            own = task.subject == s
            direct[own] = (direct[own] - direct[own].mean(0)) / (direct[own].std(0) + 1e-8)
    fit_rows = np.r_[train, val]
    scaler = StandardScaler().fit(direct[train])
    scaler_all = StandardScaler().fit(direct[fit_rows])
    expected = _direct_lr(scaler.transform(direct[train]), task.y[train],
                          scaler.transform(direct[val]), task.y[val],
                          scaler_all.transform(direct[test]),
                          scaler_all.transform(direct[fit_rows]), task.y[fit_rows])
    np.testing.assert_allclose(model.predict_proba(features[test]), expected, atol=1e-6)


@pytest.mark.parametrize("aligned", [False, True])
def test_tangent_space_lr_equals_pyriemann(eegmat_windows, aligned: bool):
    task = eegmat_windows
    train, val, test = (_rows(task, s) for s in (TRAIN, VAL, TEST))
    features = classical_features("tangent", task.x, task.subject, task.sfreq, aligned=aligned)
    model, _ = fit_with_validation(classical_pipeline("tangent"), features, task.y, train, val)
    covs = Covariances("oas").fit_transform(task.x.astype(np.float64))
    if aligned:  # each subject's covariances re-centred at its own Riemannian mean
        for s in np.unique(task.subject):
            own = task.subject == s
            inv = invsqrtm(mean_riemann(covs[own]))
            covs[own] = inv @ covs[own] @ inv
    fit_rows = np.r_[train, val]
    ts_train = TangentSpace(metric="riemann").fit(covs[train])
    ts_all = TangentSpace(metric="riemann").fit(covs[fit_rows])
    expected = _direct_lr(ts_train.transform(covs[train]), task.y[train],
                          ts_train.transform(covs[val]), task.y[val],
                          ts_all.transform(covs[test]), ts_all.transform(covs[fit_rows]),
                          task.y[fit_rows])
    np.testing.assert_allclose(model.predict_proba(features[test]), expected, atol=1e-6)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_probe_folds_into_one_linear_layer(eegmat_windows, n_classes: int):
    task = eegmat_windows
    features = classical_features("bandpower", task.x, task.subject, task.sfreq, aligned=False)
    y = task.y if n_classes == 2 else task.y + (task.subject == "01")  # a third class
    probe = logistic_probe(0.1).fit(features, y)
    weight, bias = logistic_as_linear(probe, n_classes)
    assert weight.shape == (n_classes, features.shape[1])
    logits = features @ weight.T + bias
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(1, keepdims=True),
                               probe.predict_proba(features), atol=1e-9)
    with pytest.raises(ValueError, match="fit on classes"):
        logistic_as_linear(probe, n_classes + 1)


def test_fit_with_validation_can_leave_the_validation_windows_unseen(eegmat_windows):
    task = eegmat_windows
    train, val, test = (_rows(task, s) for s in (TRAIN, VAL, TEST))
    features = classical_features("bandpower", task.x, task.subject, task.sfreq, aligned=False)
    refit, c = fit_with_validation(logistic_probe(1.0), features, task.y, train, val)
    kept, c_kept = fit_with_validation(logistic_probe(1.0), features, task.y, train, val,
                                       refit_on_val=False)
    assert c_kept == c  # the same choice of C; only the final fit differs
    scaler = StandardScaler().fit(features[train])
    direct = _lr(c).fit(scaler.transform(features[train]), task.y[train])
    np.testing.assert_allclose(kept.predict_proba(features[test]),
                               direct.predict_proba(scaler.transform(features[test])), atol=1e-6)
    assert not np.allclose(refit.predict_proba(features[test]),
                           kept.predict_proba(features[test]), atol=1e-3)
