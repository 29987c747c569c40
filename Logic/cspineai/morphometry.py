"""Spinal cord morphometry on a cord mask: CSA, diameters, shape, SAC and MSCC per axial slice and per vertebral level.

The reference method is the Spinal Cord Toolbox (SCT, ``sct_process_segmentation``); ``methods.md`` section 5 is the
contract. What is computed, and how it relates to SCT:

1. **Axial slices.** The mask is reoriented (permutation and flips, no resampling) so that ``array[k]`` is an axial
   slice, i towards L, j towards P and k towards S. Every slice holding cord (any voxel above 1e-6) is measured.
   For a sagittal acquisition these "slices" are the axial reformats of the voxel grid, with anisotropic in-plane
   spacing; every measurement below is done in mm, so anisotropy is handled exactly rather than by resampling.
2. **Centreline.** Per slice, the centre of mass of the (soft) mask in mm, ``(u, v)`` along i and j, as a function of
   the slice position ``w`` along k. ``u(w)`` and ``v(w)`` are fitted as SCT does by default: a cubic smoothing spline
   (``scipy.interpolate.splrep``) with SCT's smoothing factor ``s = density * smooth * pz / 3`` (``smooth`` = 20,
   ``pz`` the slice spacing in mm, ``density`` = (slices with cord / slices spanned)^2), converted from SCT's voxel
   units to mm^2 by the smaller in-plane spacing (SCT resamples in-plane to that spacing before fitting). A
   degree-5 polynomial (SCT's ``polyfit``) is selectable. On a binary mask the centres equal SCT's (mean of the
   non-zero voxels); on a soft mask they are the partial-volume centre of mass.
3. **Angle correction.** The slice is cut obliquely through a cord whose axis has tangent ``t = (du/dw, dv/dw, 1)``.
   Projecting the slice onto the plane perpendicular to ``t`` shortens lengths along the in-plane tilt direction by
   ``cos(theta)`` (``theta`` the angle between ``t`` and the slice normal) and leaves the perpendicular direction
   unchanged, so ``CSA = area * cos(theta)`` exactly, and the shape moments are mapped the same way. SCT instead scales
   the slice by ``cos(angle_AP)`` along RL and ``cos(angle_RL)`` along AP (its two tilt components); that agrees to
   second order and is exact only for a tilt about one axis. The two components are reported too (``angle_ap_deg``:
   rotation about the AP axis, i.e. tilt in the coronal plane; ``angle_rl_deg``: about RL, tilt in the sagittal plane).
4. **Area** is the sum of the soft (partial-volume) mask times the pixel area. SCT sums a 5x bilinearly upsampled copy;
   bilinear upsampling conserves that sum up to border effects, so the sum is taken directly (on the shared real case
   it reproduces SCT's uncorrected mean exactly). Unlike SCT the slice is not rescaled to its own maximum first (SCT's
   rescaling inflates slices whose every voxel is partial).
5. **Shape** (as SCT): the slice is upsampled 5x (bilinear) and thresholded at 0.5; on the largest 8-connected
   component, the second moments (in mm, angle-corrected) give the equivalent ellipse: major/minor axis lengths
   ``4 sqrt(eigenvalue)`` (exact for an ellipse), ``orientation`` = angle of the major axis from the RL axis folded into
   [0, 90] degrees, eccentricity; the RL diameter is the major axis when the orientation is below 45 degrees, else the
   minor (SCT's rule). ``compression_ratio`` = AP / RL. Solidity = pixels / pixels inside the convex hull of the pixel
   corners (skimage's definition; ``scipy.spatial.ConvexHull``), which a linear map leaves unchanged, so it is not
   angle-corrected.
6. **Vertebral levels.** Each slice gets the level of the nearest vertebral body (label values 3..9 = C2..T1 of
   :mod:`cspineai.series`) along k: distance 0 inside a body's k-extent, else the gap to it; a tie (a slice exactly half
   way across a disc) goes to the cranial level. Per-level figures are means over the slices of that level.
7. **SAC** (space available for the cord) = canal area = CSF + cord area on the same slice, angle-corrected with the
   cord's centreline; ``sac_csa_ratio`` = SAC / CSA.
8. **MSCC** at a slice = ``(1 - m_i / ((m_a + m_b) / 2)) * 100`` (Miyanji 2007, as ``sct_compute_compression``): ``m_i``
   the metric at the slice, ``m_a`` / ``m_b`` its mean over the slices ``distance_mm`` .. ``distance_mm + extent_mm``
   above / below along the centreline (SCT's defaults: AP diameter, 10 mm, 20 mm). It is NaN where either window
   holds no slice.

Measured on the manual mask of the shared real T1 case (77 slices, ``Testing/test_morphometry.py``): mean
angle-corrected CSA 70.2970 mm^2 (SD 4.1148) against SCT's 70.296283 mm^2 (SD 4.114482), i.e. +0.001%; 70.2947 mm^2
with ``polyfit``; 70.610390 mm^2 without angle correction, SCT's figure to the last digit.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path, atomic_write_text
from .errors import CSpineInputError
from .geometry import reorient, require_same_grid, resample_like, same_grid
from .series import BODY_VALUES, CORD, CSF, VERTEBRAL_LEVELS
from .volume import Volume

logger = logging.getLogger(__name__)

#: A voxel counts as cord above this value (resampling turns 0 into ~1e-16, as SCT notes).
NEAR_ZERO = 1e-6
#: SCT's upsampling factor for the shape metrics and its default centreline smoothing.
UPSAMPLE = 5
SMOOTH = 20.0
POLY_DEGREE = 5

#: Per-slice columns: name -> (unit, description). The order is the CSV's and the table node's.
SLICE_COLUMNS: dict[str, tuple[str, str]] = {
    "slice": ("", "slice index along k of the axial-reoriented grid, inferior to superior"),
    "level": ("", "vertebral level (nearest vertebral body along SI), empty without a level map"),
    "distance_from_top_mm": ("mm", "distance along the centreline from the most superior slice with cord"),
    "centre_r_mm": ("mm", "centreline point, RAS R coordinate"),
    "centre_a_mm": ("mm", "centreline point, RAS A coordinate"),
    "centre_s_mm": ("mm", "centreline point, RAS S coordinate"),
    "area_mm2": ("mm2", "cord area in the slice plane, no angle correction"),
    "csa_mm2": ("mm2", "cross-sectional area: area * cos(angle)"),
    "angle_deg": ("deg", "angle between the centreline tangent and the slice normal"),
    "angle_ap_deg": ("deg", "tilt about the AP axis (coronal plane), SCT's angle_AP"),
    "angle_rl_deg": ("deg", "tilt about the RL axis (sagittal plane), SCT's angle_RL"),
    "diameter_ap_mm": ("mm", "antero-posterior diameter of the equivalent ellipse"),
    "diameter_rl_mm": ("mm", "right-left diameter of the equivalent ellipse"),
    "compression_ratio": ("", "AP / RL diameter"),
    "eccentricity": ("", "eccentricity of the equivalent ellipse"),
    "orientation_deg": ("deg", "angle of the major axis from the RL axis, 0..90"),
    "solidity": ("", "area / convex hull area"),
    "components": ("", "connected parts of the cord in the slice (more than 1: shape uses the largest)"),
    "sac_mm2": ("mm2", "space available for the cord: canal (CSF + cord) area, angle-corrected"),
    "sac_csa_ratio": ("", "SAC / CSA"),
    "mscc_percent": ("%", "maximum spinal cord compression index of the slice against healthy windows above/below"),
}

#: Metrics averaged per level (slice columns), the per-level table adds ``level``, ``slices`` and ``csa_sd_mm2``.
LEVEL_METRICS = (
    "area_mm2",
    "csa_mm2",
    "angle_deg",
    "diameter_ap_mm",
    "diameter_rl_mm",
    "compression_ratio",
    "eccentricity",
    "orientation_deg",
    "solidity",
    "sac_mm2",
    "sac_csa_ratio",
)
LEVEL_COLUMNS: dict[str, tuple[str, str]] = {
    "level": ("", "vertebral level"),
    "slices": ("", "number of slices assigned to the level"),
    **{name: (SLICE_COLUMNS[name][0], "mean " + SLICE_COLUMNS[name][1]) for name in LEVEL_METRICS},
    "csa_sd_mm2": ("mm2", "standard deviation of the CSA over the level's slices (population, as SCT)"),
}


@dataclasses.dataclass
class Morphometry:
    """Result of :func:`measure_cord`.

    Attributes:
        slices: one row per slice with cord, superior first; keys and units in :data:`SLICE_COLUMNS` (NaN = not
            measurable, e.g. SAC without a canal mask).
        levels: one row per vertebral level with slices, cranial first; keys in :data:`LEVEL_COLUMNS`.
        summary: whole-cord figures (``slices``, ``csa_mean_mm2``, ``csa_sd_mm2``, ``area_mean_mm2``, ...).
        centreline_ras: ``(N, 3)`` fitted centreline points in RAS mm, one per row of ``slices``.
    """

    slices: list[dict]
    levels: list[dict]
    summary: dict
    centreline_ras: np.ndarray

    def column(self, name: str) -> np.ndarray:
        """One per-slice column as a float array (superior first)."""
        return np.array([row[name] for row in self.slices], dtype=float)


# --- inputs -------------------------------------------------------------------------------------------------------
def _name(volume: Volume, fallback: str) -> str:
    return volume.source or volume.modality or fallback


def mask_fraction(volume: Volume, label: int, what: str) -> np.ndarray:
    """The voxels' fraction of a structure in [0, 1] (float64, same shape).

    Integer masks with a single non-zero value (0/1, 0/255) are binary masks; integer masks with several non-zero
    values are label maps of :mod:`cspineai.series` (``label`` is taken); floating masks are soft masks and must lie
    in [0, 1].
    """
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise CSpineInputError(_name(volume, what), f"the {what} must be a 3-D image")
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        if np.count_nonzero(np.unique(array)) <= 1:
            return (array != 0).astype(np.float64)
        return (array == label).astype(np.float64)
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise CSpineInputError(_name(volume, what), f"the {what} holds NaN or infinite values")
    if array.min() < -1e-3 or array.max() > 1.0 + 1e-3:
        raise CSpineInputError(
            _name(volume, what),
            f"a soft {what} must hold fractions in [0, 1] but its values span {array.min():.3g} .. {array.max():.3g}",
        )
    return np.clip(array, 0.0, 1.0)


def _on_cord_grid(volume: Volume, cord: Volume, interpolation: str) -> Volume:
    """``volume`` on the cord mask's grid: as is when the grids match, else resampled in physical space."""
    if same_grid(volume, cord):
        return volume
    resampled = resample_like(volume, cord, interpolation)
    if not np.any(resampled.array):
        raise CSpineInputError(_name(volume, "mask"), "does not overlap the cord mask in physical space")
    return resampled


# --- centreline ---------------------------------------------------------------------------------------------------
def fit_centreline(
    w_mm: np.ndarray,
    u_mm: np.ndarray,
    v_mm: np.ndarray,
    slice_spacing: float,
    pixel_mm: float,
    span: int,
    method: str = "bspline",
    smooth: float = SMOOTH,
    degree: int = POLY_DEGREE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit ``u(w)`` and ``v(w)`` through per-slice cord centres; return the fitted ``u, v`` and ``du/dw, dv/dw``.

    Args:
        w_mm: ``(N,)`` slice positions along the slice normal in mm, increasing.
        u_mm, v_mm: ``(N,)`` centres of mass in mm along the two in-plane axes.
        slice_spacing: slice spacing in mm (SCT's ``pz``).
        pixel_mm: the smaller in-plane spacing, to turn SCT's voxel-unit smoothing factor into mm^2.
        span: number of slices from the first to the last slice with cord (SCT's ``z_ref`` length).
        method: ``"bspline"`` (SCT's default) or ``"polyfit"``.
        smooth: SCT's ``smooth`` for the spline; ``degree``: polynomial degree for ``polyfit``.
    """
    from scipy import interpolate

    n = len(w_mm)
    if n < 2:  # one slice: no direction to fit, the cord is taken as perpendicular to it
        return u_mm.copy(), v_mm.copy(), np.zeros(n), np.zeros(n)
    if method == "polyfit":
        fits = [np.polynomial.Polynomial.fit(w_mm, y, min(degree, n - 1)) for y in (u_mm, v_mm)]
        return fits[0](w_mm), fits[1](w_mm), fits[0].deriv()(w_mm), fits[1].deriv()(w_mm)
    if method != "bspline":
        raise ValueError(f"centreline fit must be 'bspline' or 'polyfit', not {method!r}")
    k = 3 if n > 3 else 1  # SCT lowers the spline degree by 2 when there are too few points
    density = (n / span) ** 2
    s = density * smooth * slice_spacing / 3.0 * pixel_mm**2
    out = []
    for y in (u_mm, v_mm):
        tck = interpolate.splrep(w_mm, y, s=s, k=k)
        out.append((interpolate.splev(w_mm, tck), interpolate.splev(w_mm, tck, der=1)))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def tilt_correction(du: float, dv: float) -> tuple[float, np.ndarray]:
    """``(cos(theta), M)`` for a centreline of slope ``(du/dw, dv/dw)``.

    ``M`` (2x2, acting on in-plane ``(u, v)`` mm) projects the oblique slice onto the plane perpendicular to the
    centreline: it shortens the in-plane tilt direction by ``cos(theta)`` and keeps the perpendicular one; ``det M``
    is ``cos(theta)``.
    """
    slope = np.array([du, dv], dtype=float)
    tan_theta = float(np.hypot(du, dv))
    cos_theta = 1.0 / math.sqrt(1.0 + tan_theta**2)
    if tan_theta < 1e-12:
        return 1.0, np.eye(2)
    d = slope / tan_theta
    return cos_theta, np.eye(2) - (1.0 - cos_theta) * np.outer(d, d)


# --- per-slice shape ----------------------------------------------------------------------------------------------
SHAPE_KEYS = ("diameter_ap_mm", "diameter_rl_mm", "compression_ratio", "eccentricity", "orientation_deg", "solidity")


def _solidity(binary: np.ndarray) -> float:
    """Pixels / pixels whose centre lies in the convex hull of the pixel corners (skimage's ``solidity``)."""
    from scipy.spatial import ConvexHull

    rows, cols = np.nonzero(binary)
    # The hull of the corners, not of the centres: a centre hull would cut half a pixel off every border pixel.
    corners = np.concatenate([np.stack([rows + dr, cols + dc], axis=1) for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)])
    hull = ConvexHull(corners)
    r0, c0 = rows.min(), cols.min()
    rr, cc = np.mgrid[r0 : rows.max() + 1, c0 : cols.max() + 1]
    centres = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(float)
    inside = np.all(centres @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9, axis=1)
    return float(len(rows) / max(int(inside.sum()), 1))


def slice_shape(fraction: np.ndarray, spacing: tuple[float, float], correction: np.ndarray) -> dict:
    """Shape metrics of one axial slice.

    Args:
        fraction: ``(J, I)`` cord fraction in [0, 1]; i runs towards L (RL axis), j towards P (AP axis).
        spacing: ``(si, sj)`` pixel size in mm along i and j.
        correction: 2x2 map of :func:`tilt_correction` acting on ``(u, v)`` = (i, j) mm coordinates.

    Returns:
        ``diameter_ap_mm``, ``diameter_rl_mm``, ``compression_ratio``, ``eccentricity``, ``orientation_deg``,
        ``solidity``, ``components``; NaN where the slice has no pixel above 0.5 after upsampling.
    """
    from scipy import ndimage

    jj, ii = np.nonzero(fraction > NEAR_ZERO)
    pad = 3  # zero border so that bilinear upsampling closes the shape
    crop = np.pad(fraction[jj.min() : jj.max() + 1, ii.min() : ii.max() + 1], pad)
    up = ndimage.zoom(crop, UPSAMPLE, order=1, grid_mode=True, mode="nearest")
    binary = up > 0.5
    labels, count = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return {**dict.fromkeys(SHAPE_KEYS, math.nan), "components": 0}
    if count > 1:
        sizes = ndimage.sum_labels(binary, labels, index=np.arange(1, count + 1))
        binary = labels == (1 + int(np.argmax(sizes)))
    rows, cols = np.nonzero(binary)
    h_u, h_v = spacing[0] / UPSAMPLE, spacing[1] / UPSAMPLE
    uv = np.stack([cols * h_u, rows * h_v], axis=1)
    # Pixel-centre moments plus each square pixel's own variance h^2/12: the continuous second moment of the region.
    cov = np.cov(uv, rowvar=False, bias=True) + np.diag([h_u**2, h_v**2]) / 12.0
    cov = correction @ cov @ correction.T
    eigenvalues, eigenvectors = np.linalg.eigh(cov)  # ascending
    minor_axis, major_axis = 4.0 * np.sqrt(np.maximum(eigenvalues, 0.0))
    major = eigenvectors[:, 1]
    orientation = math.degrees(math.atan2(abs(major[1]), abs(major[0])))  # from RL (u), folded into [0, 90]
    diameter_rl, diameter_ap = (major_axis, minor_axis) if orientation < 45.0 else (minor_axis, major_axis)
    return {
        "diameter_ap_mm": float(diameter_ap),
        "diameter_rl_mm": float(diameter_rl),
        "compression_ratio": float(diameter_ap / diameter_rl) if diameter_rl > 0 else math.nan,
        "eccentricity": float(math.sqrt(max(0.0, 1.0 - eigenvalues[0] / eigenvalues[1])))
        if eigenvalues[1] > 0
        else math.nan,
        "orientation_deg": float(orientation),
        "solidity": _solidity(binary),
        "components": int(count),
    }


# --- levels and compression ---------------------------------------------------------------------------------------
def level_extents(labels: np.ndarray, slice_spacing: float) -> dict[str, tuple[float, float]]:
    """k-extent in mm (min, max slice position) of each vertebral body present in a ``(K, J, I)`` label map."""
    extents = {}
    for level in VERTEBRAL_LEVELS:
        ks = np.nonzero(np.any(labels == BODY_VALUES[level], axis=(1, 2)))[0]
        if len(ks):
            extents[level] = (ks.min() * slice_spacing, ks.max() * slice_spacing)
    return extents


def assign_levels(w_mm: np.ndarray, extents: dict[str, tuple[float, float]]) -> list[str]:
    """Level of the nearest vertebral body along SI for each slice position ``w_mm`` (k increasing towards S).

    Distance is 0 inside a body's extent, else the gap to its nearer end; ties go to the cranial level.
    """
    if not extents:
        return [""] * len(w_mm)
    names = list(extents)
    lows = np.array([extents[n][0] for n in names])
    highs = np.array([extents[n][1] for n in names])
    out = []
    for w in np.asarray(w_mm, dtype=float):
        distance = np.maximum(np.maximum(lows - w, w - highs), 0.0)
        best = np.flatnonzero(np.isclose(distance, distance.min(), atol=1e-6))
        out.append(names[best[np.argmax(highs[best])]])  # cranial = the body reaching furthest superior
    return out


def mscc(m_i: float, m_a: float, m_b: float) -> float:
    """Maximum spinal cord compression in %: ``(1 - m_i / ((m_a + m_b) / 2)) * 100`` (Miyanji et al. 2007)."""
    reference = (m_a + m_b) / 2.0
    if not np.isfinite(reference) or reference <= 0:
        return math.nan
    return (1.0 - m_i / reference) * 100.0


def mscc_profile(
    distance_mm: np.ndarray, metric: np.ndarray, window_distance_mm: float = 10.0, window_extent_mm: float = 20.0
) -> np.ndarray:
    """MSCC (%) at every slice against the mean metric over healthy windows above and below.

    Args:
        distance_mm: ``(N,)`` position along the centreline, increasing downwards (distance from the top).
        metric: ``(N,)`` metric per slice (NaN ignored), e.g. the AP diameter.
        window_distance_mm, window_extent_mm: the windows are ``[d - distance - extent, d - distance]`` (above) and
            ``[d + distance, d + distance + extent]`` (below), SCT's ``-distance`` and ``-extent``.
    """
    distance_mm = np.asarray(distance_mm, dtype=float)
    metric = np.asarray(metric, dtype=float)
    valid = np.isfinite(metric)
    out = np.full(len(metric), math.nan)
    lo, hi = window_distance_mm, window_distance_mm + window_extent_mm
    for n, d in enumerate(distance_mm):
        above = valid & (distance_mm >= d - hi - 1e-9) & (distance_mm <= d - lo + 1e-9)
        below = valid & (distance_mm >= d + lo - 1e-9) & (distance_mm <= d + hi + 1e-9)
        if valid[n] and above.any() and below.any():
            out[n] = mscc(metric[n], metric[above].mean(), metric[below].mean())
    return out


# --- the measurement ----------------------------------------------------------------------------------------------
def _slice_runs(slices: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    runs: list[list[int]] = []
    for k in sorted(slices):
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def measure_cord(
    cord: Volume,
    csf: Volume | None = None,
    levels: Volume | None = None,
    angle_correction: bool = True,
    centreline_fit: str = "bspline",
    smooth: float = SMOOTH,
    degree: int = POLY_DEGREE,
    mscc_metric: str = "diameter_ap_mm",
    mscc_distance_mm: float = 10.0,
    mscc_extent_mm: float = 20.0,
) -> Morphometry:
    """Measure the cord slice by slice (see the module docstring for the method and its relation to SCT).

    Args:
        cord: cord mask, binary, soft (fractions in [0, 1]) or a label map of :mod:`cspineai.series` (value 1).
        csf: optional CSF or canal mask (binary, soft, or a label map: values 1 and 2 form the canal); resampled onto
            the cord grid when its grid differs. Enables ``sac_mm2`` and ``sac_csa_ratio``.
        levels: optional label map with vertebral bodies (values 3..9); resampled (nearest) onto the cord grid when
            needed. Enables ``level`` and the per-level table.
        angle_correction: multiply areas by cos(angle) and map the shape moments (SCT's ``-angle-corr 1``).
        centreline_fit: ``"bspline"`` (SCT default, ``smooth``) or ``"polyfit"`` (``degree``).
        mscc_metric: per-slice column the MSCC is computed on (SCT's default: AP diameter).
        mscc_distance_mm, mscc_extent_mm: healthy windows of :func:`mscc_profile`.

    Raises:
        CSpineInputError: naming the file, for an empty cord mask, unusable values, or masks that do not overlap.
    """
    if mscc_metric not in SLICE_COLUMNS:
        raise ValueError(f"mscc_metric must be a slice column, not {mscc_metric!r}")
    source = _name(cord, "cord mask")
    cord_fraction = mask_fraction(cord, CORD, "cord mask")
    if not np.any(cord_fraction > NEAR_ZERO):
        raise CSpineInputError(source, "no cord found: the cord mask is empty")

    # Everything goes onto the cord grid first, then all are reoriented together so that the grids stay identical.
    cord_axial = reorient(cord.with_array(cord_fraction), "axial")
    canal_axial = None
    if csf is not None:
        csf_grid = _on_cord_grid(csf.with_array(mask_fraction(csf, CSF, "CSF mask")), cord, "linear")
        canal_axial = reorient(csf_grid, "axial")
        require_same_grid(cord_axial, canal_axial, "the cord and CSF masks")
    levels_axial = None
    if levels is not None:
        levels_grid = _on_cord_grid(levels.with_array(np.asarray(levels.array).astype(np.int16)), cord, "nearest")
        levels_axial = reorient(levels_grid, "axial")

    fraction = cord_axial.array
    si, sj, sk = cord_axial.spacing
    pixel_area = si * sj
    per_slice = fraction.sum(axis=(1, 2))
    ks = np.flatnonzero(np.any(fraction > NEAR_ZERO, axis=(1, 2)))
    jj, ii = np.mgrid[0 : fraction.shape[1], 0 : fraction.shape[2]]
    # Centres of mass in mm along i (u) and j (v); the slice frame is orthonormal, so the tangent angle is physical.
    u = np.array([(fraction[k] * ii).sum() / per_slice[k] for k in ks]) * si
    v = np.array([(fraction[k] * jj).sum() / per_slice[k] for k in ks]) * sj
    w = ks * sk
    u_fit, v_fit, du_fit, dv_fit = fit_centreline(
        w, u, v, sk, min(si, sj), int(ks.max() - ks.min() + 1), centreline_fit, smooth, degree
    )
    # Without correction the angles are reported as 0 (the angle applied), as SCT's -angle-corr 0 does.
    du, dv = (du_fit, dv_fit) if angle_correction else (np.zeros_like(du_fit), np.zeros_like(dv_fit))

    extents = level_extents(levels_axial.array, sk) if levels_axial is not None else {}
    if levels_axial is not None and not extents:
        raise CSpineInputError(_name(levels, "level map"), "no vertebral body label (values 3..9, C2..T1) found")
    slice_levels = assign_levels(w, extents)

    # Distance along the centreline from the top: the segment between adjacent slices is sk / cos(angle).
    step = sk * np.sqrt(1.0 + du_fit**2 + dv_fit**2)
    from_bottom = np.concatenate([[0.0], np.cumsum((step[1:] + step[:-1]) / 2.0 * np.diff(ks))])
    from_top = from_bottom[-1] - from_bottom
    index = np.stack([u_fit / si, v_fit / sj, ks.astype(float)], axis=1)
    centre_ras = index @ cord_axial.ijk_to_ras[:3, :3].T + cord_axial.ijk_to_ras[:3, 3]

    rows = []
    for n, k in enumerate(ks):
        cos_theta, correction = tilt_correction(du[n], dv[n])
        area = float(per_slice[k] * pixel_area)
        row = {
            "slice": int(k),
            "level": slice_levels[n],
            "distance_from_top_mm": float(from_top[n]),
            "centre_r_mm": float(centre_ras[n, 0]),
            "centre_a_mm": float(centre_ras[n, 1]),
            "centre_s_mm": float(centre_ras[n, 2]),
            "area_mm2": area,
            "csa_mm2": area * cos_theta,
            "angle_deg": math.degrees(math.acos(min(1.0, cos_theta))),
            "angle_ap_deg": math.degrees(math.atan(du[n])),
            "angle_rl_deg": math.degrees(math.atan(dv[n])),
            **slice_shape(fraction[k], (si, sj), correction),
            "sac_mm2": math.nan,
            "sac_csa_ratio": math.nan,
        }
        if canal_axial is not None:
            # Sum, not maximum: a CSF ring and the cord share partial voxels at their border; a canal mask that
            # already holds the cord saturates at 1.
            canal = np.clip(canal_axial.array[k] + fraction[k], 0.0, 1.0)
            row["sac_mm2"] = float(canal.sum() * pixel_area * cos_theta)
            row["sac_csa_ratio"] = row["sac_mm2"] / row["csa_mm2"]
        rows.append(row)
    split = [row["slice"] for row in rows if row["components"] > 1]
    if split:  # one message per mask, not one per slice: a CLI run over a real scan printed a screenful
        logger.warning(
            "%d of %d slices have the cord mask in several parts (slices %s; column 'components'): their area and "
            "CSA count every part, their shape measures only the largest", len(split), len(rows), _slice_runs(split)
        )

    rows.reverse()  # superior first, as read from the top of the neck
    centre_ras = centre_ras[::-1].copy()
    profile = mscc_profile(
        np.array([r["distance_from_top_mm"] for r in rows]),
        np.array([r[mscc_metric] for r in rows], dtype=float),
        mscc_distance_mm,
        mscc_extent_mm,
    )
    for row, value in zip(rows, profile, strict=True):
        row["mscc_percent"] = float(value)
    rows = [{name: row[name] for name in SLICE_COLUMNS} for row in rows]
    return Morphometry(rows, _per_level(rows), _summary(rows, mscc_metric), centre_ras)


def _per_level(rows: list[dict]) -> list[dict]:
    out = []
    for level in VERTEBRAL_LEVELS:
        chosen = [r for r in rows if r["level"] == level]
        if not chosen:
            continue
        entry = {"level": level, "slices": len(chosen)}
        for name in LEVEL_METRICS:
            values = np.array([r[name] for r in chosen], dtype=float)
            entry[name] = float(np.nanmean(values)) if np.any(np.isfinite(values)) else math.nan
        entry["csa_sd_mm2"] = float(np.std([r["csa_mm2"] for r in chosen]))
        out.append(entry)
    return out


def _summary(rows: list[dict], mscc_metric: str) -> dict:
    csa = np.array([r["csa_mm2"] for r in rows])
    mscc_values = np.array([r["mscc_percent"] for r in rows])
    summary = {
        "slices": len(rows),
        "length_mm": float(rows[-1]["distance_from_top_mm"]) if rows else 0.0,
        "csa_mean_mm2": float(csa.mean()),
        "csa_sd_mm2": float(csa.std()),  # population SD, as SCT's aggregate_slicewise
        "csa_min_mm2": float(csa.min()),
        "area_mean_mm2": float(np.mean([r["area_mm2"] for r in rows])),
        "mscc_metric": mscc_metric,
        "mscc_max_percent": math.nan,
        "mscc_max_distance_from_top_mm": math.nan,
        "mscc_max_level": "",
    }
    for name in ("diameter_ap_mm", "diameter_rl_mm", "compression_ratio", "solidity", "sac_mm2", "sac_csa_ratio"):
        values = np.array([r[name] for r in rows], dtype=float)
        summary[f"{name}_mean"] = float(np.nanmean(values)) if np.any(np.isfinite(values)) else math.nan
    if np.any(np.isfinite(mscc_values)):
        n = int(np.nanargmax(mscc_values))
        summary.update(
            mscc_max_percent=float(mscc_values[n]),
            mscc_max_distance_from_top_mm=rows[n]["distance_from_top_mm"],
            mscc_max_level=rows[n]["level"],
        )
    return summary


# --- outputs ------------------------------------------------------------------------------------------------------
def _format(value) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6f}"
    return str(value)


def write_csv(rows: list[dict], path: str | os.PathLike, columns: dict[str, tuple[str, str]] | None = None) -> Path:
    """Write ``rows`` as CSV atomically; the header names each column with its unit (``csa_mm2``...). NaN -> empty."""
    columns = columns or {name: ("", "") for name in (rows[0] if rows else {})}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(columns))
    for row in rows:
        writer.writerow([_format(row.get(name, "")) for name in columns])
    return atomic_write_text(path, buffer.getvalue())


def plot_csa(result: Morphometry, path: str | os.PathLike, title: str = "Spinal cord cross-sectional area") -> Path:
    """PNG of the CSA (and the uncorrected area) against the distance from the top, vertebral levels shaded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    distance = result.column("distance_from_top_mm")
    figure = Figure(figsize=(8, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    levels = [row["level"] for row in result.slices]
    for n, level in enumerate(dict.fromkeys(x for x in levels if x)):
        span = distance[[i for i, x in enumerate(levels) if x == level]]
        axes.axvspan(span.min() - 0.5, span.max() + 0.5, color="0.85" if n % 2 == 0 else "0.93", zorder=0)
        axes.text(
            (span.min() + span.max()) / 2,
            1.01,
            level,
            transform=axes.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes.plot(
        distance, result.column("area_mm2"), color="0.5", linestyle="--", linewidth=1, label="area (no angle corr.)"
    )
    axes.plot(distance, result.column("csa_mm2"), color="tab:blue", marker=".", linewidth=1.5, label="CSA")
    sac = result.column("sac_mm2")
    if np.any(np.isfinite(sac)):
        axes.plot(distance, sac, color="tab:orange", linewidth=1.2, label="SAC (canal)")
    axes.set_xlabel("distance from top along the centreline (mm)")
    axes.set_ylabel("area (mm²)")
    axes.set_title(title, pad=16)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def write_outputs(result: Morphometry, folder: str | os.PathLike, stem: str = "morphometry") -> dict[str, Path]:
    """Write ``<stem>_slices.csv``, ``<stem>_levels.csv`` (with levels) and ``<stem>_csa.png``, each atomically."""
    folder = Path(folder)
    written = {
        "slices": write_csv(result.slices, folder / f"{stem}_slices.csv", SLICE_COLUMNS),
        "plot": plot_csa(result, folder / f"{stem}_csa.png"),
    }
    if result.levels:
        written["levels"] = write_csv(result.levels, folder / f"{stem}_levels.csv", LEVEL_COLUMNS)
    return written
