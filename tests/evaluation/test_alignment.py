"""Subject alignment on real eegmat windows: what it does, and that it reads nothing it must not
(no label, no other subject's data)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pyriemann.utils.mean import mean_riemann

from eegfm.evaluation.alignment import (
    ALIGNED_RMS_UV,
    euclidean_align,
    mean_covariance_of,
    recenter_covariances,
    standardize_per_subject,
)
from eegfm.evaluation.classical import covariances
from eegfm.training.finetune.fold_models import aligned_windows


def test_euclidean_alignment_whitens_each_subject(eegmat_windows):
    task = eegmat_windows
    aligned = euclidean_align(task.x, task.subject)
    for subject in np.unique(task.subject):
        rows = task.subject == subject
        eig = np.linalg.eigvalsh(mean_covariance_of(aligned[rows]))
        # average reference leaves one null direction; the other C - 1 are whitened, the
        # weakest shrunk a little by the ridge that keeps the inverse finite
        assert eig[0] < 1e-2 * ALIGNED_RMS_UV**2
        assert np.all(eig[1:] <= 1.001 * ALIGNED_RMS_UV**2)
        assert np.all(eig[1:] >= 0.9 * ALIGNED_RMS_UV**2)
        assert np.median(eig[1:]) == pytest.approx(ALIGNED_RMS_UV**2, rel=0.01)
        before = np.linalg.eigvalsh(mean_covariance_of(task.x[rows]))
        assert before[-1] / before[1] > 10  # the raw spectrum was far from white


def test_alignment_reads_no_label_and_no_other_subject(eegmat_windows):
    task = eegmat_windows
    reference = aligned_windows(task, "euclidean")
    rng = np.random.default_rng(0)
    relabelled = dataclasses.replace(task, y=rng.permutation(task.y))
    np.testing.assert_array_equal(aligned_windows(relabelled, "euclidean"), reference)
    # replace every other subject's signal by noise: subject 00's aligned windows do not move
    mine = task.subject == "00"
    x = task.x.copy()
    x[~mine] = rng.normal(0, 50, size=x[~mine].shape).astype(np.float32)
    others_changed = dataclasses.replace(task, x=x)
    np.testing.assert_array_equal(aligned_windows(others_changed, "euclidean")[mine],
                                  reference[mine])
    # subject 00 alone gives the same windows as subject 00 among the others
    alone = euclidean_align(task.x[mine], task.subject[mine])
    np.testing.assert_array_equal(alone, reference[mine])
    assert aligned_windows(task, "none") is task.x


def test_padding_stays_zero_and_mixed_caps_need_a_layout(eegmat_windows):
    task = eegmat_windows
    x = np.concatenate([task.x[:40], np.zeros((40, 3, task.x.shape[-1]), np.float32)], 1)
    mask = np.zeros(x.shape[:2], bool)
    mask[:, :19] = True
    subject = np.full(40, "00")
    aligned = euclidean_align(x, subject, mask)
    assert not aligned[:, 19:].any()
    np.testing.assert_allclose(aligned[:, :19], euclidean_align(task.x[:40], subject),
                               rtol=1e-5, atol=1e-4)
    mask[20:, 18] = False  # the second half of the windows lost a channel: another cap
    with pytest.raises(ValueError, match="differ in channels"):
        euclidean_align(x, subject, mask)
    layout = np.r_[np.zeros(20, int), np.ones(20, int)]
    split = euclidean_align(x, subject, mask, layout)
    assert not split[20:, 18:].any()


def test_recentred_covariances_have_identity_mean_per_subject(eegmat_windows):
    task = eegmat_windows
    covs = covariances(task.x)
    recentred = recenter_covariances(covs, task.subject)
    for subject in np.unique(task.subject):
        rows = task.subject == subject
        np.testing.assert_allclose(mean_riemann(recentred[rows]), np.eye(19), atol=1e-6)
    mine = task.subject == "01"
    np.testing.assert_allclose(recenter_covariances(covs[mine], task.subject[mine]),
                               recentred[mine], rtol=1e-10, atol=1e-12)


def test_standardisation_per_subject(eegmat_windows):
    task = eegmat_windows
    features = np.log10(np.var(task.x, axis=-1))
    z = standardize_per_subject(features, task.subject)
    for subject in np.unique(task.subject):
        rows = task.subject == subject
        np.testing.assert_allclose(z[rows].mean(0), 0, atol=1e-9)
        np.testing.assert_allclose(z[rows].std(0), 1, rtol=1e-6)
