"""Pearson correlation, Fisher's z and the two-correlation z-test against hand-computed and scipy values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cspineai.errors import CSpineInputError
from cspineai.stats import Correlation, compare_correlations, fisher_z, inverse_fisher_z, pearson


def test_fisher_z_matches_its_closed_form_and_inverts():
    # artanh(0.5) = 0.5 * ln(1.5 / 0.5) = 0.5 * ln 3
    assert fisher_z(0.5) == pytest.approx(0.5 * math.log(3.0), abs=1e-12)
    assert fisher_z(-0.3) == pytest.approx(-0.5 * math.log(1.3 / 0.7), abs=1e-12)
    r = np.array([-0.9, -0.2, 0.0, 0.45, 0.99])
    np.testing.assert_allclose(inverse_fisher_z(fisher_z(r)), r, atol=1e-12)


@pytest.mark.parametrize("r", [1.0, -1.0, 1.2, float("nan")])
def test_fisher_z_refuses_correlations_outside_the_open_interval(r):
    with pytest.raises(CSpineInputError, match="strictly between -1 and 1"):
        fisher_z(r)


def test_pearson_agrees_with_scipy_and_with_the_fisher_interval_by_hand(rng):
    x = rng.normal(size=40)
    y = 0.6 * x + rng.normal(scale=0.8, size=40)
    result = pearson(x, y)
    reference = stats.pearsonr(x, y)
    assert result.r == pytest.approx(reference.statistic, abs=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert result.n == 40
    half_width = stats.norm.ppf(0.975) / math.sqrt(40 - 3)
    assert result.ci_low == pytest.approx(math.tanh(math.atanh(result.r) - half_width), abs=1e-9)
    assert result.ci_high == pytest.approx(math.tanh(math.atanh(result.r) + half_width), abs=1e-9)
    assert result.ci_low < result.r < result.ci_high


def test_pearson_of_a_known_small_sample_equals_the_textbook_value():
    # x = 1..5, y = 2, 4, 5, 4, 5: Sxy = 6, Sxx = 10, Syy = 6 -> r = 6 / sqrt(60)
    result = pearson([1, 2, 3, 4, 5], [2, 4, 5, 4, 5], confidence=0.9)
    assert result.r == pytest.approx(6 / math.sqrt(60), abs=1e-12)
    half_width = stats.norm.ppf(0.95) / math.sqrt(2)
    assert result.ci_high == pytest.approx(math.tanh(math.atanh(result.r) + half_width), abs=1e-9)
    assert result.confidence == 0.9


def test_pearson_drops_pairs_with_a_missing_value():
    result = pearson([1, 2, np.nan, 3, 4, 5], [2, 4, 7, 5, 4, 5])
    assert result.n == 5
    assert result.r == pytest.approx(6 / math.sqrt(60), abs=1e-12)


def test_pearson_reports_error_when_too_few_pairs_or_a_constant_sample():
    with pytest.raises(CSpineInputError, match="at least 4 pairs"):
        pearson([1, 2, 3], [3, 2, 1])
    with pytest.raises(CSpineInputError, match="constant"):
        pearson([1, 1, 1, 1, 1], [1, 2, 3, 4, 5])
    with pytest.raises(CSpineInputError, match="same length"):
        pearson([1, 2, 3, 4], [1, 2, 3])


def test_compare_correlations_matches_the_hand_computed_independent_samples_z_test():
    # r1 = 0.5 (n1 = 50), r2 = 0.3 (n2 = 60):
    # z1 = 0.549306, z2 = 0.309520, SE = sqrt(1/47 + 1/57) = 0.197031 -> z = 1.21700, two-sided p = 0.22360
    result = compare_correlations(0.5, 50, 0.3, 60)
    assert result.z == pytest.approx(1.21700, abs=5e-5)
    assert result.p_value == pytest.approx(0.22360, abs=5e-5)
    assert compare_correlations(0.5, 50, 0.3, 60, alternative="greater").p_value == pytest.approx(0.11180, abs=5e-5)
    assert compare_correlations(0.5, 50, 0.3, 60, alternative="less").p_value == pytest.approx(1 - 0.11180, abs=5e-5)


def test_compare_correlations_is_antisymmetric_and_zero_for_equal_correlations():
    forward = compare_correlations(0.62, 80, 0.41, 35)
    backward = compare_correlations(0.41, 35, 0.62, 80)
    assert forward.z == pytest.approx(-backward.z)
    assert forward.p_value == pytest.approx(backward.p_value)
    same = compare_correlations(0.3, 20, 0.3, 200)
    assert same.z == 0.0 and same.p_value == pytest.approx(1.0)


def test_compare_correlations_accepts_two_pearson_results(rng):
    x1, x2 = rng.normal(size=30), rng.normal(size=45)
    c1 = pearson(x1, x1 + rng.normal(scale=0.5, size=30))
    c2 = pearson(x2, x2 + rng.normal(scale=2.0, size=45))
    assert isinstance(c1, Correlation)
    by_result = compare_correlations(c1, r2=c2)
    by_numbers = compare_correlations(c1.r, 30, c2.r, 45)
    assert by_result.z == pytest.approx(by_numbers.z)
    assert by_result.n1 == 30 and by_result.n2 == 45


def test_compare_correlations_reports_error_when_a_sample_is_too_small():
    with pytest.raises(CSpineInputError, match="at least 4 pairs"):
        compare_correlations(0.5, 3, 0.2, 40)
    with pytest.raises(ValueError, match="alternative"):
        compare_correlations(0.5, 30, 0.2, 40, alternative="bigger")
