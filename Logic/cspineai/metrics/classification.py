"""Binary classification figures: accuracy, F1, AUC with DeLong's 95% CI, sensitivity, specificity, PPV, NPV.

Conventions: ``y_true`` holds 0/1 labels (1 = positive, e.g. postoperative neck pain), ``score`` a continuous score
that is larger for the positive class (a probability or a logit), ``y_pred`` 0/1 decisions. Figures whose denominator
is zero (sensitivity without positives, PPV without positive decisions) are ``nan``, never a silent 0 or 1.

A decision threshold is chosen on validation data (:func:`youden_threshold`) and then applied unchanged to test data
(methods.md, section 8): :func:`binary_report` takes the threshold as an argument for that reason.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

from ..errors import CSpineInputError


def _labels(y_true, name: str = "y_true") -> np.ndarray:
    y = np.asarray(y_true).ravel()
    if y.size == 0:
        raise CSpineInputError(name, "no samples")
    if not np.isin(y, (0, 1)).all():
        raise CSpineInputError(name, "labels must be 0 or 1")
    return y.astype(np.int64)


def _scores(score, n: int) -> np.ndarray:
    s = np.asarray(score, dtype=np.float64).ravel()
    if s.size != n:
        raise CSpineInputError("score", f"{s.size} scores for {n} labels")
    if not np.isfinite(s).all():
        raise CSpineInputError("score", "scores must be finite")
    return s


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def confusion_counts(y_true, y_pred) -> tuple[int, int, int, int]:
    """``(tp, fp, tn, fn)`` of 0/1 decisions against 0/1 labels."""
    y, p = _labels(y_true), _labels(y_pred, "y_pred")
    if y.size != p.size:
        raise CSpineInputError("y_pred", f"{p.size} decisions for {y.size} labels")
    tp = int(np.sum((p == 1) & (y == 1)))
    fp = int(np.sum((p == 1) & (y == 0)))
    tn = int(np.sum((p == 0) & (y == 0)))
    fn = int(np.sum((p == 0) & (y == 1)))
    return tp, fp, tn, fn


def accuracy(y_true, y_pred) -> float:
    tp, fp, tn, fn = confusion_counts(y_true, y_pred)
    return _ratio(tp + tn, tp + fp + tn + fn)


def sensitivity(y_true, y_pred) -> float:
    """Recall of the positive class, TP / (TP + FN)."""
    tp, _, _, fn = confusion_counts(y_true, y_pred)
    return _ratio(tp, tp + fn)


def specificity(y_true, y_pred) -> float:
    """TN / (TN + FP)."""
    _, fp, tn, _ = confusion_counts(y_true, y_pred)
    return _ratio(tn, tn + fp)


def ppv(y_true, y_pred) -> float:
    """Positive predictive value (precision), TP / (TP + FP)."""
    tp, fp, _, _ = confusion_counts(y_true, y_pred)
    return _ratio(tp, tp + fp)


def npv(y_true, y_pred) -> float:
    """Negative predictive value, TN / (TN + FN)."""
    _, _, tn, fn = confusion_counts(y_true, y_pred)
    return _ratio(tn, tn + fn)


def f1_score(y_true, y_pred) -> float:
    """F1 of the positive class, 2TP / (2TP + FP + FN); ``nan`` without positives and positive decisions."""
    tp, fp, _, fn = confusion_counts(y_true, y_pred)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def roc_auc(y_true, score) -> float:
    """Area under the ROC curve (Mann–Whitney statistic; ties count one half); ``nan`` when one class is absent."""
    y = _labels(y_true)
    s = _scores(score, y.size)
    m, n = int(y.sum()), int(y.size - y.sum())
    if m == 0 or n == 0:
        return float("nan")
    ranks = stats.rankdata(s)  # midranks handle ties exactly as the Mann–Whitney U statistic does
    return float((ranks[y == 1].sum() - m * (m + 1) / 2) / (m * n))


def _delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components for ``scores`` of shape (R, N) (R scorers of the same N cases).

    Sun & Xu (2014), "Fast implementation of DeLong's algorithm for comparing the areas under correlated ROC curves",
    IEEE Signal Processing Letters 21(11): the placement values come from three midrank computations, O(N log N) instead
    of DeLong's O(m·n) pairwise kernel. Hand-written because no maintained Python library provides DeLong's variance
    (scikit-learn gives the AUC only).
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = np.stack([stats.rankdata(r) for r in pos])
    ty = np.stack([stats.rankdata(r) for r in neg])
    tz = np.stack([stats.rankdata(r) for r in np.concatenate([pos, neg], axis=1)])
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v01 = (tz[:, :m] - tx) / n  # V10 in DeLong's notation: per-positive placement (fraction of negatives below)
    v10 = 1.0 - (tz[:, m:] - ty) / m  # per-negative placement (fraction of positives above)
    return auc, v01, v10


def delong_covariance(y_true, *scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (R,) and their DeLong covariance matrix (R, R) for R scorers evaluated on the same cases."""
    y = _labels(y_true)
    if y.sum() < 2 or (y.size - y.sum()) < 2:
        raise CSpineInputError("y_true", "DeLong's variance needs at least two positive and two negative cases")
    s = np.stack([_scores(sc, y.size) for sc in scores])
    auc, v01, v10 = _delong_components(y, s)
    m, n = v01.shape[1], v10.shape[1]
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return auc, cov


def auc_delong_ci(y_true, score, level: float = 0.95) -> tuple[float, float, float]:
    """``(auc, low, high)``: AUC with DeLong's confidence interval (normal approximation, clipped to [0, 1])."""
    auc, cov = delong_covariance(y_true, score)
    se = float(np.sqrt(max(cov[0, 0], 0.0)))
    z = stats.norm.ppf(0.5 + level / 2)
    a = float(auc[0])
    return a, max(0.0, a - z * se), min(1.0, a + z * se)


def delong_test(y_true, score_a, score_b) -> tuple[float, float]:
    """``(z, p)`` of DeLong's two-sided test that two scorers on the same cases have the same AUC."""
    auc, cov = delong_covariance(y_true, score_a, score_b)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var <= 0:
        return 0.0, 1.0
    z = float((auc[0] - auc[1]) / np.sqrt(var))
    return z, float(2 * stats.norm.sf(abs(z)))


def youden_threshold(y_true, score) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1; decide positive when ``score >= threshold``.

    Candidate thresholds are the observed scores; of equal J the largest threshold wins (fewer positive decisions).
    Choose it on validation data and apply it to test data unchanged.
    """
    y = _labels(y_true)
    s = _scores(score, y.size)
    m, n = int(y.sum()), int(y.size - y.sum())
    if m == 0 or n == 0:
        raise CSpineInputError("y_true", "Youden's threshold needs both classes")
    candidates = np.unique(s)[::-1]
    decide = s[None, :] >= candidates[:, None]  # (T, N)
    tpr = (decide & (y == 1)).sum(axis=1) / m
    fpr = (decide & (y == 0)).sum(axis=1) / n
    return float(candidates[int(np.argmax(tpr - fpr))])


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true,
    values,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``metric(y_true, values)`` with a percentile bootstrap interval over cases.

    ``values`` are scores or decisions, whatever ``metric`` takes. Resamples where the metric is undefined (``nan``,
    e.g. AUC of a resample with one class) are dropped; the interval is ``nan`` when fewer than half remain.
    """
    y = np.asarray(y_true).ravel()
    v = np.asarray(values).ravel()
    estimate = float(metric(y, v))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, y.size, size=(n_resamples, y.size))
    samples = np.array([metric(y[d], v[d]) for d in draws], dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size < n_resamples / 2:
        return estimate, float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return estimate, float(low), float(high)


def binary_report(y_true, score, threshold: float = 0.5, bootstrap: int = 0, seed: int = 0) -> dict[str, float]:
    """Every figure of methods.md section 8 for one scorer at a given threshold (``score >= threshold`` is positive).

    Keys: ``n``, ``positives``, ``threshold``, ``accuracy``, ``f1``, ``sensitivity``, ``specificity``, ``ppv``, ``npv``,
    ``auc``, ``auc_low``, ``auc_high`` (DeLong 95% CI; ``nan`` with fewer than two cases of a class) and, when
    ``bootstrap`` > 0, ``<figure>_low`` / ``<figure>_high`` percentile intervals for the threshold-based figures.
    """
    y = _labels(y_true)
    s = _scores(score, y.size)
    pred = (s >= threshold).astype(np.int64)
    report: dict[str, float] = {"n": float(y.size), "positives": float(y.sum()), "threshold": float(threshold)}
    decision_metrics = {
        "accuracy": accuracy, "f1": f1_score, "sensitivity": sensitivity,
        "specificity": specificity, "ppv": ppv, "npv": npv,
    }
    for name, fn in decision_metrics.items():
        report[name] = fn(y, pred)
    try:
        report["auc"], report["auc_low"], report["auc_high"] = auc_delong_ci(y, s)
    except CSpineInputError:
        report["auc"], report["auc_low"], report["auc_high"] = roc_auc(y, s), float("nan"), float("nan")
    if bootstrap:
        for name, fn in decision_metrics.items():
            _, report[f"{name}_low"], report[f"{name}_high"] = bootstrap_ci(fn, y, pred, bootstrap, seed=seed)
    return report
