"""The statistics of paper 001 (section III.A): Pearson correlation with its confidence interval, Fisher's z-transform,
and the z-test comparing two correlations.

The paper correlates per-level metrics (e.g. FA against SAC/CSA) and compares the correlation coefficients between
groups (women and men; one MRI machine and another) "using the z-test on Fisher z-transformed correlation coefficients"
(its reference [26], Hinkle, Wiersma and Jurs, *Applied statistics for the behavioral sciences*, 2003). Those groups
are different participants, so the variant is the test for **two independent samples**::

    z = (z1 - z2) / sqrt(1 / (n1 - 3) + 1 / (n2 - 3)),   z_i = artanh(r_i)

with z standard normal under equal population correlations. It is not valid for two correlations measured on the same
participants (e.g. FA-SAC/CSA against FA-CSA in one group): those are dependent and need Steiger's (1980) test, which is
not implemented here.

Pearson's r, its p-value and its confidence interval are scipy's (``scipy.stats.pearsonr``; the interval is the
Fisher-transform interval ``tanh(artanh(r) +- z_{1-alpha/2} / sqrt(n - 3))``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .errors import CSpineInputError

SOURCE = "statistics"


@dataclasses.dataclass(frozen=True)
class Correlation:
    """Pearson correlation of ``n`` pairs: ``r``, two-sided ``p_value`` and the ``confidence`` interval of r."""

    r: float
    p_value: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float = 0.95


@dataclasses.dataclass(frozen=True)
class CorrelationComparison:
    """z-test of two independent correlations: ``z`` statistic, ``p_value`` for the ``alternative`` hypothesis."""

    z: float
    p_value: float
    r1: float
    n1: int
    r2: float
    n2: int
    alternative: str = "two-sided"


def fisher_z(r: float | np.ndarray) -> float | np.ndarray:
    """Fisher's z-transform ``artanh(r)``: approximately normal with SD ``1 / sqrt(n - 3)``; r must be in (-1, 1)."""
    r_array = np.asarray(r, dtype=float)
    if np.any(~np.isfinite(r_array)) or np.any(np.abs(r_array) >= 1.0):
        raise CSpineInputError(SOURCE, f"Fisher's z-transform needs a correlation strictly between -1 and 1, got {r}")
    z = np.arctanh(r_array)
    return float(z) if z.ndim == 0 else z


def inverse_fisher_z(z: float | np.ndarray) -> float | np.ndarray:
    """Back from Fisher's z to a correlation: ``tanh(z)``."""
    r = np.tanh(np.asarray(z, dtype=float))
    return float(r) if r.ndim == 0 else r


def pearson(x, y, confidence: float = 0.95) -> Correlation:
    """Pearson correlation of paired samples ``x`` and ``y`` (1-D, same length, at least 4 pairs) with its CI.

    Pairs where either value is NaN are dropped first (a level without a measurement), and the count says how many
    remain.
    """
    from scipy import stats

    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise CSpineInputError(SOURCE, f"paired samples must have the same length, got {len(x)} and {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 4:
        raise CSpineInputError(SOURCE, f"a correlation with a confidence interval needs at least 4 pairs, got {len(x)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise CSpineInputError(SOURCE, "one of the samples is constant, so its correlation is undefined")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    result = stats.pearsonr(x, y)
    interval = result.confidence_interval(confidence_level=confidence)
    return Correlation(
        float(result.statistic), float(result.pvalue), float(interval.low), float(interval.high), len(x), confidence
    )


def compare_correlations(
    r1: float | Correlation,
    n1: int | None = None,
    r2: float | Correlation | None = None,
    n2: int | None = None,
    alternative: str = "two-sided",
) -> CorrelationComparison:
    """z-test of H0: rho1 = rho2 for correlations from two independent samples (Fisher's z, see the module docstring).

    Either ``compare_correlations(r1, n1, r2, n2)`` with numbers or ``compare_correlations(c1, r2=c2)`` with two
    :class:`Correlation` results. ``alternative``: ``"two-sided"``, ``"greater"`` (rho1 > rho2) or ``"less"``.
    """
    from scipy import stats

    if isinstance(r1, Correlation):
        r1, n1 = r1.r, r1.n
    if isinstance(r2, Correlation):
        r2, n2 = r2.r, r2.n
    if r2 is None or n1 is None or n2 is None:
        raise TypeError("give r1, n1, r2 and n2, or two Correlation results")
    for n in (n1, n2):
        if int(n) != n or n < 4:
            raise CSpineInputError(SOURCE, f"each correlation needs at least 4 pairs for the z-test, got n = {n}")
    z = (fisher_z(r1) - fisher_z(r2)) / math.sqrt(1.0 / (n1 - 3) + 1.0 / (n2 - 3))
    if alternative == "two-sided":
        p = 2.0 * stats.norm.sf(abs(z))
    elif alternative == "greater":
        p = stats.norm.sf(z)
    elif alternative == "less":
        p = stats.norm.cdf(z)
    else:
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', not {alternative!r}")
    return CorrelationComparison(float(z), float(p), float(r1), int(n1), float(r2), int(n2), alternative)
