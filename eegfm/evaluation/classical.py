"""Classical baselines from the libraries that define them: features + logistic regression.

- **log band power + LR**: Welch power spectrum per channel (scipy), mean power in each band,
  log10, standardised, scikit-learn's class-balanced ``LogisticRegression``;
- **tangent space + LR** (MOABB's standard Riemannian pipeline): OAS-shrunk spatial covariance
  (pyriemann ``Covariances``), projection to the tangent space at the training mean (pyriemann
  ``TangentSpace``), ``LogisticRegression``.

Features are computed once for every window (they depend on no label and no other window), then
each fold fits the classifier on its training windows and picks the regularisation strength
``C`` on its validation subjects. Subject alignment acts on the features
(:mod:`eegfm.evaluation.alignment`): per-subject standardisation of band powers, per-subject
re-centring of covariances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from scipy.signal import welch
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from eegfm.evaluation.alignment import recenter_covariances, standardize_per_subject

BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0)}
C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
MAX_ITER = 2000


def band_power(x: np.ndarray, sfreq: float, bands: Mapping[str, Sequence[float]] = BANDS,
               segment_s: float = 1.0) -> np.ndarray:
    """``log10`` mean Welch power per channel and band: ``x (N, C, T)`` µV -> ``(N, C, n_bands)``.

    Welch segments of ``segment_s`` (Hann, half overlap) give 1 Hz resolution at 1 s.
    """
    x = np.asarray(x, dtype=np.float64)
    nperseg = min(round(segment_s * sfreq), x.shape[-1])
    freqs, psd = welch(x, fs=sfreq, nperseg=nperseg, axis=-1)
    out = np.empty((*x.shape[:2], len(bands)))
    for b, (name, (low, high)) in enumerate(bands.items()):
        bins = (freqs >= low) & (freqs < high)
        if not bins.any():
            raise ValueError(f"band {name} [{low}, {high}) Hz holds no frequency bin at "
                             f"{sfreq} Hz with {segment_s} s segments")
        out[..., b] = np.log10(psd[..., bins].mean(-1) + 1e-12)
    return out


def covariances(x: np.ndarray, estimator: str = "oas") -> np.ndarray:
    """Shrunk spatial covariance ``(N, C, C)`` of windows ``x (N, C, T)`` (pyriemann)."""
    return Covariances(estimator=estimator).fit_transform(np.asarray(x, dtype=np.float64))


def classical_features(kind: str, x: np.ndarray, subject: np.ndarray, sfreq: float, *,
                       aligned: bool, bands: Mapping[str, Sequence[float]] = BANDS
                       ) -> np.ndarray:
    """The per-window input of a classical pipeline, subject-aligned when ``aligned``.

    ``bandpower``: ``(N, C x bands)`` log powers; ``tangent``: ``(N, C, C)`` covariances.
    """
    if kind == "bandpower":
        features = band_power(x, sfreq, bands).reshape(len(x), -1)
        return standardize_per_subject(features, subject) if aligned else features
    if kind == "tangent":
        covs = covariances(x)
        return recenter_covariances(covs, subject) if aligned else covs
    raise ValueError(f"unknown classical pipeline {kind!r}; choose bandpower or tangent")


def classical_pipeline(kind: str, C: float = 1.0) -> Pipeline:
    """The scikit-learn pipeline that turns :func:`classical_features` into class probabilities.

    The logistic regression weighs classes inversely to their frequency, as the networks'
    class-balanced sampler does: the score is balanced accuracy, and eegmat holds three rest
    windows per arithmetic window.
    """
    if kind == "bandpower":
        return logistic_probe(C)
    if kind == "tangent":
        return make_pipeline(TangentSpace(metric="riemann"), _logistic(C))
    raise ValueError(f"unknown classical pipeline {kind!r}; choose bandpower or tangent")


def logistic_probe(C: float = 1.0) -> Pipeline:
    """Standardised features -> class-balanced logistic regression: the classifier of band
    power + LR, and of the ``logistic`` probe on frozen encoder features."""
    return make_pipeline(StandardScaler(), _logistic(C))


def logistic_as_linear(pipeline: Pipeline, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (K, F), bias (K,))`` whose logits give a fitted :func:`logistic_probe`'s
    probabilities on the raw features (the scaler folded in; binary: logit 0 for class 0)."""
    scaler, classifier = pipeline[0], pipeline[-1]
    weight = classifier.coef_ / scaler.scale_
    bias = classifier.intercept_ - weight @ scaler.mean_
    if not np.array_equal(classifier.classes_, np.arange(n_classes)):
        raise ValueError(f"the probe was fit on classes {classifier.classes_.tolist()}, "
                         f"not 0..{n_classes - 1}")
    if n_classes == 2:
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.r_[0.0, bias]
    return weight, bias


def _logistic(C: float) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=MAX_ITER, class_weight="balanced")


def fit_with_validation(pipeline: BaseEstimator, features: np.ndarray, y: np.ndarray,
                        train: np.ndarray, val: np.ndarray,
                        grid: Sequence[float] = C_GRID, *, refit_on_val: bool = True
                        ) -> tuple[BaseEstimator, float]:
    """Pick ``C`` by balanced accuracy on ``val``, refit on ``train`` + ``val``; (model, C).

    With no validation windows the pipeline's own ``C`` is kept and it is fit on ``train``.
    ``refit_on_val=False`` keeps the model fit on ``train`` alone, so that ``val`` stays unseen
    for a later selection (LP-FT's early stopping).
    """
    step = pipeline.steps[-1][0]
    best_c = pipeline.get_params()[f"{step}__C"]
    if len(val):
        scores = []
        for c in grid:
            model = clone(pipeline).set_params(**{f"{step}__C": c})
            model.fit(features[train], y[train])
            scores.append(balanced_accuracy_score(y[val], model.predict(features[val])))
        best_c = grid[int(np.argmax(scores))]  # first of ties: the strongest regularisation
    rows = np.concatenate([train, val]) if refit_on_val else train
    model = clone(pipeline).set_params(**{f"{step}__C": best_c})
    return model.fit(features[rows], y[rows]), float(best_c)
