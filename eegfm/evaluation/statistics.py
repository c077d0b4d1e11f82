"""Paired comparisons of models over the same test subjects.

Two models of one report are scored on identical splits and windows, so their per-subject
scores are paired. For each pair: the mean difference, a percentile bootstrap 95 % CI of it
(subjects resampled with replacement) and the two-sided Wilcoxon signed-rank test (scipy).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

N_BOOTSTRAP = 10_000


def paired_comparison(a: Mapping[str, float], b: Mapping[str, float], *,
                      n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """``a`` minus ``b`` over the subjects both score: mean, bootstrap 95 % CI, Wilcoxon p.

    Subjects with a missing or NaN score in either are left out (``n`` says how many remain).
    """
    subjects = [s for s in a if s in b and _finite(a[s]) and _finite(b[s])]
    diff = np.array([a[s] - b[s] for s in subjects], dtype=np.float64)
    out: dict[str, Any] = {"n": len(subjects), "mean_difference": None, "ci95": None,
                           "wilcoxon_p": None, "wins": int((diff > 0).sum()),
                           "losses": int((diff < 0).sum())}
    if not len(diff):
        return out
    out["mean_difference"] = float(diff.mean())
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_bootstrap, len(diff)))].mean(1)
    out["ci95"] = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
    if np.any(diff != 0):
        out["wilcoxon_p"] = float(wilcoxon(diff, zero_method="wilcox").pvalue)
    else:
        out["wilcoxon_p"] = 1.0  # identical scores: no evidence of a difference
    return out


def all_pairs(scores: Mapping[str, Mapping[str, float]], *, n_bootstrap: int = N_BOOTSTRAP,
              seed: int = 0, pairs: Sequence[tuple[str, str]] | None = None
              ) -> list[dict[str, Any]]:
    """:func:`paired_comparison` for every pair of models (or the given ``pairs``)."""
    pairs = list(itertools.combinations(scores, 2)) if pairs is None else pairs
    return [{"model": a, "versus": b,
             **paired_comparison(scores[a], scores[b], n_bootstrap=n_bootstrap, seed=seed)}
            for a, b in pairs]


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))
