"""Registration figures of merit (methods §3): warped-label Dice, landmark error, Jacobian folding.

Conventions:

- A displacement field is a numpy array ``[k, j, i, 3]`` on a fixed-image (MRI) grid; vector ``d(x)`` maps the fixed
  point ``x`` to the moving (CT) point ``x + d(x)`` (SimpleITK ``DisplacementFieldTransform`` convention), in mm.
- The field's frame (LPS or RAS) does not matter for the Jacobian determinant, which is frame-invariant, but the grid's
  ``spacing`` (i, j, k) and ``direction`` must be given so that derivatives are taken in physical mm.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .segmentation import dice_scores


def warped_label_dice(warped: np.ndarray, fixed: np.ndarray, labels: Iterable[int] | None = None) -> float:
    """Mean Dice of moving labels warped (nearest neighbour) onto the fixed grid against the fixed labels.

    Per-label Dice is :func:`cspineai.metrics.segmentation.dice_scores` (one definition); labels absent from both maps
    are left out of the mean.
    """
    values = [v for v in dice_scores(warped, fixed, labels).values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def landmark_errors(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Euclidean distances (mm) between matched points ``(N, 3)``; NaN rows (missing landmarks) are dropped."""
    predicted, target = np.asarray(predicted, dtype=float), np.asarray(target, dtype=float)
    if predicted.shape != target.shape or predicted.shape[-1] != 3:
        raise ValueError(f"landmark arrays must both be (N, 3), got {predicted.shape} and {target.shape}")
    distances = np.linalg.norm(predicted - target, axis=-1)
    return distances[~np.isnan(distances)]


def landmark_summary(errors: np.ndarray) -> dict[str, float]:
    """Mean, 95th percentile and maximum of landmark errors (mm), with their count."""
    errors = np.asarray(errors, dtype=float)
    if errors.size == 0:
        return {"mean_mm": float("nan"), "p95_mm": float("nan"), "max_mm": float("nan"), "n": 0}
    return {
        "mean_mm": float(errors.mean()),
        "p95_mm": float(np.percentile(errors, 95)),
        "max_mm": float(errors.max()),
        "n": int(errors.size),
    }


def jacobian_determinant(
    displacement: np.ndarray, spacing: tuple[float, float, float], direction: np.ndarray | None = None
) -> np.ndarray:
    """Determinant of the Jacobian of ``x -> x + d(x)`` at every voxel, derivatives in physical mm.

    Args:
        displacement: ``[k, j, i, 3]`` field in mm (any orthonormal world frame).
        spacing: voxel size (i, j, k) in mm of the field's grid.
        direction: 3x3 matrix whose columns are the world directions of i, j, k (identity when omitted).

    Returns:
        ``[k, j, i]`` determinants; ``<= 0`` marks folding. Derivatives are numpy's second-order central differences
        (second-order one-sided at the borders), exact for fields up to quadratic; an axis of one voxel contributes
        no derivative (treated as constant along it).
    """
    displacement = np.asarray(displacement, dtype=float)
    if displacement.ndim != 4 or displacement.shape[-1] != 3:
        raise ValueError(f"displacement must be [k, j, i, 3], got {displacement.shape}")
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    # d/d(index) for index axes i, j, k (array axes 2, 1, 0), unit spacing; then chain rule to world mm.
    per_index = []
    for axis in (2, 1, 0):
        n = displacement.shape[axis]
        if n == 1:
            per_index.append(np.zeros_like(displacement))
        else:
            per_index.append(np.gradient(displacement, axis=axis, edge_order=2 if n > 2 else 1))
    d_index = np.stack(per_index, axis=-1)  # [k, j, i, component, index axis]
    index_from_world = np.linalg.inv(direction @ np.diag(spacing))
    d_world = d_index @ index_from_world  # [k, j, i, component, world axis]
    return np.linalg.det(d_world + np.eye(3))


def folding_percent(jacobian: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Percentage of voxels (inside ``mask`` when given) whose Jacobian determinant is ``<= 0``."""
    values = jacobian if mask is None else jacobian[np.asarray(mask, dtype=bool)]
    return float(100.0 * np.count_nonzero(values <= 0) / max(values.size, 1))


def sd_log_jacobian(jacobian: np.ndarray, mask: np.ndarray | None = None, floor: float = 1e-9) -> float:
    """Standard deviation of ``log(max(det J, floor))`` (Learn2Reg's convention: folded voxels clipped, not dropped)."""
    values = jacobian if mask is None else jacobian[np.asarray(mask, dtype=bool)]
    return float(np.std(np.log(np.clip(values, floor, None))))


def jacobian_figures(
    displacement: np.ndarray,
    spacing: tuple[float, float, float],
    direction: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """``{"folding_percent", "sd_log_jacobian"}`` of a displacement field (see :func:`jacobian_determinant`)."""
    jac = jacobian_determinant(displacement, spacing, direction)
    return {"folding_percent": folding_percent(jac, mask), "sd_log_jacobian": sd_log_jacobian(jac, mask)}
