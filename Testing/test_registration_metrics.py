"""Registration figures of merit checked against values worked out by hand on analytic fields."""

from __future__ import annotations

import numpy as np
import pytest

from cspineai.metrics.registration import (
    folding_percent,
    jacobian_determinant,
    jacobian_figures,
    landmark_errors,
    landmark_summary,
    sd_log_jacobian,
    warped_label_dice,
)


def world_points(shape_kji, spacing, direction, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in shape_kji], indexing="ij")
    ijk = np.stack([i, j, k], axis=-1)
    return ijk @ (np.asarray(direction) @ np.diag(spacing)).T + np.asarray(origin)


def rotation_about_z(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def test_linear_field_on_an_oblique_anisotropic_grid_has_the_determinant_of_its_matrix():
    spacing, direction = (0.8, 1.2, 3.0), rotation_about_z(30.0)
    a = np.array([[0.10, 0.05, 0.00], [-0.02, -0.30, 0.04], [0.01, 0.00, 0.20]])
    field = world_points((6, 7, 8), spacing, direction) @ a.T
    jac = jacobian_determinant(field, spacing, direction)
    np.testing.assert_allclose(jac, np.linalg.det(np.eye(3) + a), rtol=1e-10)


def test_zero_field_has_unit_jacobian_no_folding_and_zero_spread():
    figures = jacobian_figures(np.zeros((4, 5, 6, 3)), (1.0, 1.0, 2.5))
    assert figures == {"folding_percent": 0.0, "sd_log_jacobian": 0.0}


def test_quadratic_field_folds_exactly_where_the_hand_computed_determinant_is_not_positive():
    # d_x(x) = -x^2 / (2 x0) gives det J = 1 - x / x0: voxels x = 11..19 of 0..19 fold when x0 = 10.5 (9 of 20 = 45%).
    x0 = 10.5
    x = world_points((3, 4, 20), (1.0, 1.0, 1.0), np.eye(3))[..., 0]
    field = np.zeros((3, 4, 20, 3))
    field[..., 0] = -(x**2) / (2 * x0)
    jac = jacobian_determinant(field, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(jac, 1.0 - x / x0, atol=1e-12)
    assert folding_percent(jac) == pytest.approx(45.0)


def test_sd_log_jacobian_of_a_smooth_compression_matches_its_analytic_value():
    # On spacing 2 mm, d_x = -x^2 / (2 * 100) gives det J = 1 - x / 100 for x = 0, 2, ..., 38 (no folding).
    x = world_points((2, 2, 20), (2.0, 1.0, 1.0), np.eye(3))[..., 0]
    field = np.zeros((2, 2, 20, 3))
    field[..., 0] = -(x**2) / 200.0
    expected = np.std(np.log(1.0 - np.arange(0, 40, 2) / 100.0))
    figures = jacobian_figures(field, (2.0, 1.0, 1.0))
    assert figures["folding_percent"] == 0.0
    assert figures["sd_log_jacobian"] == pytest.approx(expected, rel=1e-10)


def test_folded_voxels_are_clipped_not_dropped_from_the_log_jacobian_spread():
    jac = np.array([1.0, 1.0, -0.5, 0.0])
    expected = np.std(np.log([1.0, 1.0, 1e-9, 1e-9]))
    assert sd_log_jacobian(jac) == pytest.approx(expected)
    assert folding_percent(jac) == 50.0
    assert folding_percent(jac, mask=np.array([True, True, False, False])) == 0.0


def test_a_single_slice_axis_contributes_no_derivative():
    field = np.zeros((1, 5, 5, 3))
    field[..., 1] = 0.1 * world_points((1, 5, 5), (1.0, 1.0, 1.0), np.eye(3))[..., 1]
    np.testing.assert_allclose(jacobian_determinant(field, (1.0, 1.0, 1.0)), 1.1)


def test_landmark_errors_and_summary_match_hand_values():
    predicted = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [1.0, 1.0, 1.0], [np.nan, 0.0, 0.0]])
    target = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 3.0], [0.0, 0.0, 0.0]])
    errors = landmark_errors(predicted, target)
    np.testing.assert_allclose(errors, [1.0, 5.0, 2.0])  # the landmark with a missing coordinate is dropped
    summary = landmark_summary(errors)
    assert summary["mean_mm"] == pytest.approx(8.0 / 3.0)
    assert summary["p95_mm"] == pytest.approx(2.0 + 0.9 * 3.0)  # linear interpolation between 2 and 5 at 95%
    assert summary["max_mm"] == 5.0 and summary["n"] == 3


def test_landmark_errors_refuse_mismatched_arrays():
    with pytest.raises(ValueError, match="landmark arrays"):
        landmark_errors(np.zeros((3, 3)), np.zeros((2, 3)))


def test_warped_label_dice_averages_the_requested_labels():
    fixed = np.zeros((1, 1, 8), dtype=np.int16)
    fixed[0, 0, :4], fixed[0, 0, 4:] = 3, 4
    warped = np.zeros_like(fixed)
    warped[0, 0, 1:5], warped[0, 0, 5:] = 3, 4
    # label 3: 2*3 / (4 + 4) = 0.75; label 4: 2*3 / (4 + 3) = 6/7; label 5 is absent from both and left out.
    assert warped_label_dice(warped, fixed, labels=[3, 4, 5]) == pytest.approx((0.75 + 6 / 7) / 2)
