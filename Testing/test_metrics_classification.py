"""Classification figures against hand-computed examples and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from cspineai.errors import CSpineInputError
from cspineai.metrics import classification as cm

sklearn_metrics = pytest.importorskip("sklearn.metrics")

# 10 cases: 4 positives. Decisions: TP=3, FN=1, FP=2, TN=4.
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
P = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])


def test_threshold_figures_match_a_hand_computed_confusion_table():
    assert cm.confusion_counts(Y, P) == (3, 2, 4, 1)
    assert cm.accuracy(Y, P) == pytest.approx(7 / 10)
    assert cm.sensitivity(Y, P) == pytest.approx(3 / 4)
    assert cm.specificity(Y, P) == pytest.approx(4 / 6)
    assert cm.ppv(Y, P) == pytest.approx(3 / 5)
    assert cm.npv(Y, P) == pytest.approx(4 / 5)
    assert cm.f1_score(Y, P) == pytest.approx(6 / 9)


def test_threshold_figures_agree_with_scikit_learn(rng):
    y = rng.integers(0, 2, 200)
    p = rng.integers(0, 2, 200)
    assert cm.accuracy(y, p) == pytest.approx(sklearn_metrics.accuracy_score(y, p))
    assert cm.f1_score(y, p) == pytest.approx(sklearn_metrics.f1_score(y, p))
    assert cm.sensitivity(y, p) == pytest.approx(sklearn_metrics.recall_score(y, p))
    assert cm.ppv(y, p) == pytest.approx(sklearn_metrics.precision_score(y, p))
    assert cm.specificity(y, p) == pytest.approx(sklearn_metrics.recall_score(1 - y, 1 - p))


def test_undefined_figures_are_nan_not_zero():
    y = np.zeros(4, dtype=int)
    p = np.zeros(4, dtype=int)
    assert np.isnan(cm.sensitivity(y, p)) and np.isnan(cm.ppv(y, p)) and np.isnan(cm.f1_score(y, p))
    assert cm.specificity(y, p) == 1.0
    assert np.isnan(cm.roc_auc(y, [0.1, 0.2, 0.3, 0.4]))


def test_auc_of_a_hand_computed_example_with_ties():
    # Positives 0.8, 0.4; negatives 0.4, 0.2, 0.1: 6 pairs, 5 won and 1 tied -> (5 + 0.5) / 6.
    y = [1, 1, 0, 0, 0]
    s = [0.8, 0.4, 0.4, 0.2, 0.1]
    assert cm.roc_auc(y, s) == pytest.approx(5.5 / 6)
    assert cm.roc_auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s))


def test_auc_agrees_with_scikit_learn_on_random_scores_with_ties(rng):
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # rounding creates ties
    assert cm.roc_auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)


def _delong_variance_by_definition(y, s):
    """DeLong et al. (1988) with the O(m·n) Mann–Whitney kernel: the reference for the fast algorithm."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return np.var(v10, ddof=1) / pos.size + np.var(v01, ddof=1) / neg.size


def test_fast_delong_variance_equals_the_pairwise_definition(rng):
    y = rng.integers(0, 2, 80)
    s = np.round(rng.normal(size=80) + 0.8 * y, 1)
    auc, cov = cm.delong_covariance(y, s)
    assert auc[0] == pytest.approx(cm.roc_auc(y, s))
    assert cov[0, 0] == pytest.approx(_delong_variance_by_definition(y, s), rel=1e-10)


def test_delong_ci_of_a_small_hand_computed_example():
    # Positives 0.9, 0.7; negatives 0.8, 0.3. By hand: psi(0.9, .) = (1, 1), psi(0.7, .) = (0, 1), so the
    # positives' placements V10 = (1, 0.5) and the negatives' V01 = (0.5, 1); AUC = 0.75;
    # var = var(V10)/m + var(V01)/n = 0.125/2 + 0.125/2 = 0.125 (sample variances).
    auc, low, high = cm.auc_delong_ci([1, 1, 0, 0], [0.9, 0.7, 0.8, 0.3])
    se = np.sqrt(0.125)
    assert auc == pytest.approx(0.75)
    assert low == pytest.approx(max(0.0, 0.75 - 1.959964 * se), abs=1e-6)
    assert high == pytest.approx(1.0)  # clipped


def test_delong_test_finds_no_difference_between_a_scorer_and_itself(rng):
    y = rng.integers(0, 2, 60)
    s = rng.normal(size=60) + y
    assert cm.delong_test(y, s, s) == (0.0, 1.0)
    z, p = cm.delong_test(y, s, rng.normal(size=60))
    assert z > 0 and p < 0.05


def test_youden_threshold_separates_perfectly_separable_scores():
    y = [0, 0, 0, 1, 1]
    s = [0.1, 0.2, 0.35, 0.4, 0.9]
    t = cm.youden_threshold(y, s)
    assert t == pytest.approx(0.4)
    report = cm.binary_report(y, s, t)
    assert report["sensitivity"] == 1.0 and report["specificity"] == 1.0


def test_youden_threshold_matches_the_roc_curve_of_scikit_learn(rng):
    y = rng.integers(0, 2, 150)
    s = rng.normal(size=150) + y
    fpr, tpr, thresholds = sklearn_metrics.roc_curve(y, s)
    best = np.max(tpr - fpr)
    t = cm.youden_threshold(y, s)
    p = (s >= t).astype(int)
    assert cm.sensitivity(y, p) + cm.specificity(y, p) - 1 == pytest.approx(best)


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible(rng):
    y = rng.integers(0, 2, 100)
    s = rng.normal(size=100) + y
    est, low, high = cm.bootstrap_ci(cm.roc_auc, y, s, n_resamples=300, seed=3)
    assert low < est < high
    assert (est, low, high) == cm.bootstrap_ci(cm.roc_auc, y, s, n_resamples=300, seed=3)
    # The bootstrap and DeLong intervals of the AUC describe the same uncertainty: similar widths.
    _, dl, dh = cm.auc_delong_ci(y, s)
    assert (high - low) == pytest.approx(dh - dl, rel=0.35)


def test_binary_report_holds_every_figure_of_the_evaluation_contract(rng):
    y = rng.integers(0, 2, 50)
    s = rng.random(50)
    report = cm.binary_report(y, s, 0.5, bootstrap=50)
    for key in ("accuracy", "f1", "auc", "auc_low", "auc_high", "sensitivity", "specificity", "ppv", "npv",
                "accuracy_low", "npv_high", "n", "threshold"):
        assert key in report


def test_refuses_labels_other_than_zero_and_one():
    with pytest.raises(CSpineInputError, match="0 or 1"):
        cm.accuracy([0, 2], [0, 1])
    with pytest.raises(CSpineInputError, match="2 scores for 3 labels"):
        cm.roc_auc([0, 1, 1], [0.1, 0.2])
