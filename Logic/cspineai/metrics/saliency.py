"""Faithfulness of saliency maps: the pointing game and the deletion curve.

- Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", IJCV 2018): a map scores a hit when
  its maximum lies inside the region that truly caused the label, grown by a tolerance margin. Here the region is the
  phantom's causal mask (:attr:`cspineai.phantom.PhantomCase.causal_mask`) and the margin is in millimetres, measured
  with the voxel spacing (anisotropic slices count at their true thickness). :data:`DEFAULT_MARGIN_MM` = 10 mm is half
  the spacing of the classifier's level-4 feature voxels on the sagittal working grid (16 voxels x 1.25 mm = 20 mm):
  Grad-CAM cannot place a peak more finely than that, as Zhang et al.'s 15-pixel tolerance reflects their networks'
  output stride. When several voxels share the maximum (maps upsampled with edge clamping have plateaus along the
  thick-slice axis), the maximum's position is their centroid (rounded to a voxel); a constant map (no maximum) misses.
- Deletion curve (Petsiuk et al., "RISE", BMVC 2018): remove the most salient voxels first, in ``steps`` equal
  fractions, replacing them by a baseline image (here a blurred copy, so that deletion removes detail without adding
  sharp edges), and record the target-class probability after each step. A faithful map makes the probability fall
  fast: a small area under the curve (AUC, fraction of voxels deleted on x in [0, 1]). The same curve with a random
  deletion order is the reference a map must beat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_MARGIN_MM = 10.0
DEFAULT_DELETION_STEPS = 20


@dataclasses.dataclass(frozen=True)
class PointingResult:
    """One pointing-game trial.

    Attributes:
        hit: the maximum lies in the region dilated by ``margin_mm``.
        distance_mm: distance from the maximum to the nearest region voxel (0 inside the region; NaN for a constant
            map).
        margin_mm: the tolerance used.
    """

    hit: bool
    distance_mm: float
    margin_mm: float


def distance_to_region(mask: np.ndarray, spacing_kji: Sequence[float]) -> np.ndarray:
    """Per voxel, the distance in mm to the nearest voxel of ``mask`` (0 inside); ``spacing_kji`` per array axis."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the region is empty: the pointing game needs at least one region voxel")
    return ndimage.distance_transform_edt(~mask, sampling=[float(s) for s in spacing_kji])


def pointing_game(saliency: np.ndarray, mask: np.ndarray, spacing_kji: Sequence[float],
                  margin_mm: float = DEFAULT_MARGIN_MM) -> PointingResult:
    """Score one map against one region (arrays on the same grid, ``[k, j, i]``; ``spacing_kji`` in mm per axis).

    :class:`cspineai.volume.Volume` spacing is ``(i, j, k)``: pass ``volume.spacing[::-1]``.
    """
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.shape != np.shape(mask):
        raise ValueError(f"saliency {saliency.shape} and region {np.shape(mask)} are not on the same grid")
    distance = distance_to_region(mask, spacing_kji)
    peak, low = np.nanmax(saliency), np.nanmin(saliency)
    if not np.isfinite(peak) or low == peak:
        return PointingResult(False, float("nan"), float(margin_mm))
    # Ties up to float rounding of interpolated values: a relative tolerance of the map's range.
    at_peak = np.argwhere(saliency >= peak - 1e-6 * (peak - low))
    centre = tuple(np.round(at_peak.mean(axis=0)).astype(int))
    found = float(distance[centre])
    return PointingResult(bool(found <= margin_mm), found, float(margin_mm))


@dataclasses.dataclass(frozen=True)
class DeletionCurve:
    """Target-class score against the fraction of voxels deleted.

    Attributes:
        fractions: ``(steps + 1,)`` from 0 to 1.
        scores: ``(steps + 1,)`` the score after deleting each fraction.
        auc: trapezoidal area under ``scores`` over ``fractions`` (lower is more faithful).
    """

    fractions: np.ndarray
    scores: np.ndarray
    auc: float


def deletion_order(saliency: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Flat voxel indices, most salient first (ties in random order when ``rng`` is given, else in index order)."""
    flat = np.asarray(saliency, dtype=np.float64).ravel()
    if rng is None:
        return np.argsort(-flat, kind="stable")
    jitter = rng.permutation(flat.size)
    return np.lexsort((jitter, -flat))


def random_order(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random deletion order of ``size`` voxels (the baseline curve)."""
    return rng.permutation(int(size))


def deletion_curve(score: Callable[[np.ndarray], np.ndarray], image: np.ndarray, baseline: np.ndarray,
                   order: np.ndarray, steps: int = DEFAULT_DELETION_STEPS, batch_size: int = 8) -> DeletionCurve:
    """Delete voxels of ``image`` in ``order`` (flat indices) in ``steps`` equal fractions, replacing them by
    ``baseline``'s values, and score each stage.

    Args:
        score: maps a batch of images ``(n, *image.shape)`` to ``n`` scores (e.g. the class-1 probability with the other
            branch's input held fixed).
        image, baseline: arrays of one shape.
        order: flat voxel indices, first deleted first (:func:`deletion_order`, :func:`random_order`).
        steps: number of deletion steps; the curve has ``steps + 1`` points including the intact image.
        batch_size: images scored per call of ``score``.
    """
    image = np.asarray(image)
    baseline = np.asarray(baseline, dtype=image.dtype)
    if baseline.shape != image.shape:
        raise ValueError(f"baseline {baseline.shape} and image {image.shape} differ in shape")
    order = np.asarray(order).ravel()
    if order.size != image.size:
        raise ValueError(f"deletion order has {order.size} voxels, the image {image.size}")
    fractions = np.linspace(0.0, 1.0, int(steps) + 1)
    counts = np.round(fractions * image.size).astype(int)
    # Rank of each voxel in the order: a stage deleting n voxels replaces exactly those of rank < n.
    rank = np.empty(image.size, dtype=np.int64)
    rank[order] = np.arange(image.size)
    rank = rank.reshape(image.shape)
    scores = []
    for start in range(0, len(counts), batch_size):
        batch = np.stack([np.where(rank < n, baseline, image) for n in counts[start:start + batch_size]])
        scores.extend(np.asarray(score(batch), dtype=np.float64).ravel().tolist())
    scores = np.asarray(scores)
    return DeletionCurve(fractions, scores, float(np.trapezoid(scores, fractions)))


def blurred_baseline(image: np.ndarray, spacing_kji: Sequence[float], sigma_mm: float = 8.0) -> np.ndarray:
    """``image`` smoothed by a Gaussian of ``sigma_mm`` (per axis in voxels: sigma / spacing): the deletion baseline,
    integrated gradients' baseline and the smoothing of their maps (:mod:`cspineai.saliency`)."""
    from scipy import ndimage

    sigma = [float(sigma_mm) / float(s) for s in spacing_kji]
    return ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma, mode="nearest").astype(np.float32)


__all__ = [
    "DEFAULT_DELETION_STEPS",
    "DEFAULT_MARGIN_MM",
    "DeletionCurve",
    "PointingResult",
    "blurred_baseline",
    "deletion_curve",
    "deletion_order",
    "distance_to_region",
    "pointing_game",
    "random_order",
]
