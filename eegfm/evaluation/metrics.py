"""Classification metrics per test subject and their NaN-aware aggregation across subjects.

All scores come from scikit-learn. A test subject with a single class (clinical datasets label
whole subjects) is a normal case, not an error: AUROC and κ are undefined there and come back
as NaN, with a note saying why.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

# Report order; the first is the headline metric (per-subject bars, table sort).
METRICS: tuple[str, ...] = ("balanced_accuracy", "cohen_kappa", "macro_f1", "auroc", "accuracy")
METRIC_LABELS: dict[str, str] = {
    "balanced_accuracy": "balanced accuracy",
    "cohen_kappa": "Cohen's κ",
    "macro_f1": "macro-F1",
    "auroc": "AUROC",
    "accuracy": "accuracy",
}


class MetricDict(dict):
    """``dict[str, float]`` of scores that also carries ``notes`` explaining any NaN."""

    def __init__(self, scores: Mapping[str, float], notes: Sequence[str] = ()) -> None:
        super().__init__(scores)
        self.notes: list[str] = list(notes)


def _checked(y_true: Any, y_pred: Any, proba: Any | None) -> tuple[np.ndarray, ...]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}"
        )
    if y_true.size == 0:
        raise ValueError("cannot score an empty test set (y_true has no windows)")
    if proba is not None:
        proba = np.asarray(proba, dtype=float)
        if proba.ndim != 2 or proba.shape[0] != y_true.size or proba.shape[1] < 2:
            raise ValueError(
                f"proba must have shape (n_windows={y_true.size}, n_classes>=2), got {proba.shape}"
            )
        if not np.isfinite(proba).all():
            raise ValueError("proba contains NaN or Inf; check the model outputs")
    return y_true, y_pred, proba


def _auroc(y_true: np.ndarray, proba: np.ndarray, labels: np.ndarray,
           notes: list[str]) -> float:
    """Binary AUROC from ``proba[:, 1]``; one-vs-rest macro AUROC for more classes."""
    present = np.unique(y_true)
    if present.size < 2:
        notes.append(
            f"AUROC undefined: the test set holds a single class ({present.tolist()})"
        )
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y_true == labels[1], proba[:, 1]))
    if not np.isin(labels, present).all():
        missing = labels[~np.isin(labels, present)].tolist()
        notes.append(f"AUROC (one-vs-rest) undefined: classes {missing} absent from the test set")
        return float("nan")
    return float(roc_auc_score(y_true, proba, multi_class="ovr", labels=labels))


def classification_metrics(y_true: Any, y_pred: Any, proba: Any | None = None, *,
                           labels: Sequence | None = None) -> MetricDict:
    """Balanced accuracy, Cohen's κ, macro-F1, accuracy and (given ``proba``) AUROC.

    Parameters
    ----------
    y_true, y_pred : (N,) true and predicted labels of one test subject (or any test set).
    proba : (N, K) class probabilities; column k belongs to ``labels[k]`` (default ``k``).
        Binary AUROC uses ``proba[:, 1]``; with K > 2, one-vs-rest macro AUROC.
    labels : all K class labels of the task. Given, macro-F1 averages over all of them (a class
        never seen nor predicted scores 0); omitted, scikit-learn's default (classes present).
    """
    y_true, y_pred, proba = _checked(y_true, y_pred, proba)
    labels_arr = None if labels is None else np.asarray(labels)
    if labels_arr is not None and proba is not None and labels_arr.size != proba.shape[1]:
        raise ValueError(f"labels has {labels_arr.size} entries but proba has "
                         f"{proba.shape[1]} columns")
    if proba is not None and labels_arr is None:
        if not np.issubdtype(y_true.dtype, np.integer):
            raise ValueError("proba columns map to labels 0..K-1 by default; y_true holds "
                             f"{y_true.dtype} labels, so pass labels= in column order")
        labels_arr_for_proba = np.arange(proba.shape[1])
    else:
        labels_arr_for_proba = labels_arr
    notes: list[str] = []
    # sklearn warns on the single-class case we handle explicitly; keep the log readable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)
        scores = {
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "cohen_kappa": float(cohen_kappa_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels_arr, average="macro",
                                       zero_division=0)),
            "accuracy": float(accuracy_score(y_true, y_pred)),
        }
        if proba is not None:
            scores["auroc"] = _auroc(y_true, proba, labels_arr_for_proba, notes)
    if np.isnan(scores["cohen_kappa"]):
        notes.append("Cohen's κ undefined: true and predicted labels agree on a single class")
    if np.unique(y_true).size < 2:
        notes.append("single-class test set: balanced accuracy is the recall of that class")
    return MetricDict(scores, notes)


def confusion(y_true: Any, y_pred: Any, labels: Sequence) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted, in the order of ``labels``.

    Explicit labels keep every subject's matrix the same shape, so they can be summed.
    """
    return confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=np.asarray(labels))


def aggregate(per_subject: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean ± sample std (ddof=1) of each metric across subjects, ignoring NaN.

    Returns ``{metric: {"mean", "std", "n", "n_nan"}}``; ``n`` counts the finite values. The std
    is NaN with fewer than two finite values, the mean with none.
    """
    if not per_subject:
        raise ValueError("aggregate() needs at least one subject's metrics")
    names: list[str] = []
    for scores in per_subject.values():
        names += [m for m in scores if m not in names]
    ordered = [m for m in METRICS if m in names] + [m for m in names if m not in METRICS]
    summary: dict[str, dict[str, float]] = {}
    for metric in ordered:
        values = np.array([float(s.get(metric, np.nan)) for s in per_subject.values()])
        finite = values[np.isfinite(values)]
        summary[metric] = {
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "std": float(finite.std(ddof=1)) if finite.size >= 2 else float("nan"),
            "n": int(finite.size),
            "n_nan": int(values.size - finite.size),
        }
    return summary
