"""Subject alignment: each subject's data re-expressed relative to its own unlabelled statistics.

Cross-subject EEG decoding loses much of its accuracy to differences between people (skull,
impedances, resting rhythm) that have nothing to do with the task. Alignment removes them using
only the windows of the subject being aligned, never their labels and never another subject's
data, so it applies to a new subject as soon as a few of their windows are recorded:

- :func:`euclidean_align` (He & Wu 2019, "Transfer learning for brain-computer interfaces: a
  Euclidean space data alignment approach"): the windows of a subject are whitened by the
  inverse square root of their mean spatial covariance, for networks and encoders;
- :func:`recenter_covariances` (Zanini et al. 2018): each subject's covariance matrices are
  moved so that their Riemannian mean is the identity, for the tangent-space pipeline;
- :func:`standardize_per_subject`: each subject's features get zero mean, unit variance, for
  feature pipelines such as log band power.

Every function takes the grouping key per row (``subject``) and aligns each group alone.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pyriemann.utils.base import invsqrtm
from pyriemann.utils.mean import mean_covariance

Alignment = Literal["none", "euclidean"]
ALIGNMENTS: tuple[str, ...] = ("none", "euclidean")

# Average-referenced EEG has a rank-deficient covariance (the channels sum to zero): a ridge of
# this fraction of the mean eigenvalue keeps the inverse square root finite.
RIDGE = 1e-3
# Whitened windows have unit power per channel; they are rescaled to a typical scalp amplitude
# so models built for µV input (fixed input scales, amplitude features) see the range they expect.
ALIGNED_RMS_UV = 10.0


def mean_covariance_of(x: np.ndarray) -> np.ndarray:
    """Arithmetic mean spatial covariance ``(C, C)`` of windows ``x (N, C, T)`` (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return np.einsum("nct,ndt->cd", x, x) / (x.shape[0] * x.shape[2])


def whitening_matrix(x: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """``R^{-1/2}`` of the (ridge-regularised) mean covariance of windows ``x (N, C, T)``."""
    return whitening_of(mean_covariance_of(x), ridge)


def whitening_of(cov: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """``(R + ridge * mean eigenvalue * I)^{-1/2}`` of a mean spatial covariance ``R (C, C)``."""
    scale = np.trace(cov) / len(cov)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError("cannot align windows with zero or non-finite power")
    return invsqrtm(cov + ridge * scale * np.eye(len(cov)))


def euclidean_align(x: np.ndarray, subject: np.ndarray, channel_mask: np.ndarray | None = None,
                    layout: np.ndarray | None = None, rms_uv: float = ALIGNED_RMS_UV
                    ) -> np.ndarray:
    """Euclidean alignment of windows ``x (N, C, T)`` µV, each subject with its own windows.

    ``channel_mask (N, C)`` marks real channels (padding stays zero); ``layout (N,)`` splits a
    subject whose recordings differ in channels into one group per channel set. Returns a new
    float32 array whose windows have, per group, identity mean covariance times ``rms_uv``².
    """
    x = np.asarray(x)
    n, c = x.shape[:2]
    mask = np.ones((n, c), dtype=bool) if channel_mask is None else np.asarray(channel_mask)
    keys = np.asarray(subject).astype(str)
    if layout is not None:
        keys = np.char.add(np.char.add(keys, "\x00"), np.asarray(layout).astype(str))
    out = np.zeros_like(x, dtype=np.float32)
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        channels = np.flatnonzero(mask[rows[0]])
        if not (mask[rows][:, channels].all() and mask[rows].sum(1).max() == channels.size):
            raise ValueError(f"subject group {key.split(chr(0))[0]!r}: windows differ in "
                             "channels; pass layout= (one id per channel set)")
        own = x[rows][:, channels].astype(np.float64)
        whitened = np.einsum("cd,ndt->nct", whitening_matrix(own), own) * rms_uv
        out[rows[:, None], channels[None, :]] = whitened.astype(np.float32)
    return out


def recenter_covariances(covs: np.ndarray, subject: np.ndarray) -> np.ndarray:
    """Covariances ``(N, C, C)`` moved so that each subject's Riemannian mean is the identity."""
    covs = np.asarray(covs, dtype=np.float64)
    out = np.empty_like(covs)
    subject = np.asarray(subject)
    for s in np.unique(subject):
        rows = np.flatnonzero(subject == s)
        inv = invsqrtm(mean_covariance(covs[rows], metric="riemann"))
        out[rows] = inv @ covs[rows] @ inv
    return out


def standardize_per_subject(features: np.ndarray, subject: np.ndarray,
                            eps: float = 1e-8) -> np.ndarray:
    """Features ``(N, F)`` z-scored with the mean and standard deviation of their own subject."""
    features = np.asarray(features, dtype=np.float64)
    out = np.empty_like(features)
    subject = np.asarray(subject)
    for s in np.unique(subject):
        rows = np.flatnonzero(subject == s)
        own = features[rows]
        out[rows] = (own - own.mean(0)) / (own.std(0) + eps)
    return out
