"""Paired statistics against scipy's Wilcoxon test and a bootstrap by hand."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import wilcoxon

from eegfm.evaluation.statistics import all_pairs, paired_comparison


def test_paired_comparison_matches_scipy_and_a_bootstrap_by_hand():
    rng = np.random.default_rng(3)
    subjects = [f"S{i:02d}" for i in range(20)]
    b = dict(zip(subjects, rng.uniform(0.5, 0.8, 20), strict=True))
    a = {s: v + 0.05 + rng.normal(0, 0.04) for s, v in b.items()}
    result = paired_comparison(a, b, n_bootstrap=2000, seed=1)
    diff = np.array([a[s] - b[s] for s in subjects])
    assert result["n"] == 20 and math.isclose(result["mean_difference"], diff.mean())
    assert math.isclose(result["wilcoxon_p"], wilcoxon(diff).pvalue)
    draws = np.random.default_rng(1).integers(0, 20, size=(2000, 20))
    means = diff[draws].mean(1)
    assert result["ci95"] == [np.quantile(means, 0.025), np.quantile(means, 0.975)]
    assert result["ci95"][0] < diff.mean() < result["ci95"][1]
    assert result["wins"] + result["losses"] == 20


def test_missing_scores_are_left_out_and_identical_models_tie():
    a = {"1": 0.6, "2": float("nan"), "3": 0.7, "4": None}
    b = {"1": 0.5, "2": 0.5, "3": 0.6, "5": 0.9}
    assert paired_comparison(a, b)["n"] == 2
    same = paired_comparison(b, b)
    assert same["mean_difference"] == 0 and same["wilcoxon_p"] == 1.0
    pairs = all_pairs({"x": a, "y": b, "z": b})
    assert [(p["model"], p["versus"]) for p in pairs] == [("x", "y"), ("x", "z"), ("y", "z")]
