"""Metrics equal scikit-learn's, single-class test subjects give NaN with a note, aggregation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from eegfm.evaluation import aggregate, classification_metrics, confusion


def _random_predictions(n_classes: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, 300)
    proba = rng.dirichlet(np.ones(n_classes), 300)
    proba[np.arange(300), y_true] += rng.uniform(0, 0.6, 300)  # a weakly informative model
    proba /= proba.sum(axis=1, keepdims=True)
    return y_true, proba.argmax(axis=1), proba


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_equal_sklearn(seed: int) -> None:
    y_true, y_pred, proba = _random_predictions(2, seed)
    scores = classification_metrics(y_true, y_pred, proba)
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert scores["cohen_kappa"] == pytest.approx(cohen_kappa_score(y_true, y_pred))
    assert scores["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert scores["auroc"] == pytest.approx(roc_auc_score(y_true, proba[:, 1]))
    assert 0.5 < scores["auroc"] < 1.0
    assert scores.notes == []


def test_multiclass_metrics_equal_sklearn() -> None:
    y_true, y_pred, proba = _random_predictions(4, 5)
    scores = classification_metrics(y_true, y_pred, proba, labels=[0, 1, 2, 3])
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert scores["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert scores["auroc"] == pytest.approx(roc_auc_score(y_true, proba, multi_class="ovr"))


def test_string_labels_need_label_order_for_proba() -> None:
    y_true, y_pred, proba = _random_predictions(2, 3)
    names = np.array(["rest", "task"])
    scores = classification_metrics(names[y_true], names[y_pred], proba, labels=names)
    assert scores["auroc"] == pytest.approx(roc_auc_score(y_true, proba[:, 1]))
    with pytest.raises(ValueError, match="labels="):
        classification_metrics(names[y_true], names[y_pred], proba)


def test_single_class_subject_gives_nan_with_note() -> None:
    y_true = np.ones(20, dtype=int)
    y_pred = np.r_[np.ones(15), np.zeros(5)].astype(int)
    proba = np.c_[1 - np.linspace(0.2, 0.9, 20), np.linspace(0.2, 0.9, 20)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # handled, not warned about
        scores = classification_metrics(y_true, y_pred, proba, labels=[0, 1])
    assert np.isnan(scores["auroc"])
    assert scores["balanced_accuracy"] == pytest.approx(0.75)
    assert any("AUROC undefined" in n for n in scores.notes)
    perfect = classification_metrics(y_true, y_true, proba)
    assert np.isnan(perfect["cohen_kappa"]) and perfect["balanced_accuracy"] == 1.0
    assert any("κ undefined" in n for n in perfect.notes)


def test_multiclass_auroc_nan_when_a_class_is_absent() -> None:
    y_true, y_pred, proba = _random_predictions(3, 4)
    keep = y_true != 2
    scores = classification_metrics(y_true[keep], y_pred[keep], proba[keep], labels=[0, 1, 2])
    assert np.isnan(scores["auroc"]) and "[2]" in scores.notes[0]


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="equal length"):
        classification_metrics([0, 1], [0])
    with pytest.raises(ValueError, match="proba"):
        classification_metrics([0, 1], [0, 1], np.ones((3, 2)))
    with pytest.raises(ValueError, match="empty"):
        classification_metrics([], [])


def test_confusion_keeps_shape_across_subjects() -> None:
    y_true, y_pred = np.array([1, 1, 1]), np.array([1, 0, 1])
    counts = confusion(y_true, y_pred, labels=[0, 1, 2])
    assert counts.shape == (3, 3)
    assert np.array_equal(counts, confusion_matrix(y_true, y_pred, labels=[0, 1, 2]))


def test_aggregate_is_nan_aware() -> None:
    per_subject = {
        "S00": {"balanced_accuracy": 0.8, "auroc": 0.9},
        "S01": {"balanced_accuracy": 0.6, "auroc": float("nan")},
        "S02": {"balanced_accuracy": 0.7, "auroc": 0.7},
    }
    summary = aggregate(per_subject)
    assert list(summary) == ["balanced_accuracy", "auroc"]
    assert summary["balanced_accuracy"]["mean"] == pytest.approx(0.7)
    assert summary["balanced_accuracy"]["std"] == pytest.approx(np.std([0.8, 0.6, 0.7], ddof=1))
    assert summary["auroc"] == pytest.approx(
        {"mean": 0.8, "std": np.std([0.9, 0.7], ddof=1), "n": 2, "n_nan": 1})
    single = aggregate({"S00": {"balanced_accuracy": 0.5}})["balanced_accuracy"]
    assert single["mean"] == 0.5 and np.isnan(single["std"])
    with pytest.raises(ValueError):
        aggregate({})
