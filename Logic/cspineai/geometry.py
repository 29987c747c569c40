"""Physical geometry: LPS/RAS, index/world, resampling, cropping, reorientation and grid comparison.

This is the one module that converts between coordinate systems. Files and SimpleITK use LPS; Slicer uses RAS;
arrays are ``[k, j, i]``. Resampling and reorientation are SimpleITK's (tested, physically exact); what is written
here is only the bookkeeping around it.
"""

from __future__ import annotations

import numpy as np

from .errors import CSpineInputError
from .volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
LPS_TO_RAS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])
RAS_TO_LPS_4 = LPS_TO_RAS_4  # the flip is its own inverse

#: Index-axis orientation (SimpleITK ``DICOMOrient`` code: the LPS direction each of i, j, k increases towards) that
#: each acquisition plane is brought to, so that k is the slice axis, in-plane axes read as radiologists display them,
#: and every canonical grid is right-handed (determinant +1).
CANONICAL_ORIENTATION = {"axial": "LPS", "sagittal": "PIR", "coronal": "LIP"}

PLANE_OF_AXIS = {0: "sagittal", 1: "coronal", 2: "axial"}  # LPS component of the slice normal -> plane


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    """Flip the first two coordinates of ``(..., 3)`` points or vectors (LPS <-> RAS; the map is an involution)."""
    points = np.asarray(points, dtype=float)
    return points * np.array([-1.0, -1.0, 1.0])


ras_to_lps = lps_to_ras


def index_to_world(volume: Volume, ijk: np.ndarray, space: str = "LPS") -> np.ndarray:
    """Map continuous indices ``(..., 3)`` in (i, j, k) order to world mm in ``space`` ("LPS" or "RAS")."""
    ijk = np.asarray(ijk, dtype=float)
    m = volume.ijk_to_lps if space.upper() == "LPS" else volume.ijk_to_ras
    return ijk @ m[:3, :3].T + m[:3, 3]


def world_to_index(volume: Volume, points: np.ndarray, space: str = "LPS") -> np.ndarray:
    """Map world points ``(..., 3)`` in ``space`` to continuous (i, j, k) indices."""
    points = np.asarray(points, dtype=float)
    m = volume.ijk_to_lps if space.upper() == "LPS" else volume.ijk_to_ras
    inv = np.linalg.inv(m)
    return points @ inv[:3, :3].T + inv[:3, 3]


def acquisition_plane(direction: np.ndarray) -> str:
    """The plane a volume was acquired in, from the dominant LPS component of its slice (k) axis."""
    k_axis = np.asarray(direction, dtype=float).reshape(3, 3)[:, 2]
    return PLANE_OF_AXIS[int(np.argmax(np.abs(k_axis)))]


def obliquity_degrees(direction: np.ndarray) -> float:
    """Angle (degrees) between the slice axis and the nearest patient axis: 0 for a straight acquisition."""
    k_axis = np.asarray(direction, dtype=float).reshape(3, 3)[:, 2]
    return float(np.degrees(np.arccos(np.clip(np.max(np.abs(k_axis)) / np.linalg.norm(k_axis), -1.0, 1.0))))


def require_plane(volume: Volume, plane: str, max_obliquity: float = 45.0) -> None:
    """Refuse a volume whose slices are not in ``plane`` (a sagittal series given where an axial one is expected)."""
    found = volume.plane
    if found != plane:
        raise CSpineInputError(
            volume.source or volume.modality,
            f"expected an {plane} acquisition for {volume.modality or 'this series'} but its slices are {found} "
            "(check that the right series was chosen and that its orientation header is intact)",
        )
    if obliquity_degrees(volume.direction) > max_obliquity:
        raise CSpineInputError(volume.source or volume.modality, f"slices are tilted more than {max_obliquity} degrees")


def reorient(volume: Volume, plane: str | None = None) -> Volume:
    """Permute and flip index axes (no resampling) to the canonical order of ``plane`` (default: its own plane).

    After this, ``array[k]`` is a slice of the acquisition plane with k increasing towards S (axial), R (sagittal) or
    P (coronal). Voxel values are untouched; only the index order and the header change.
    """
    import SimpleITK as sitk

    plane = plane or volume.plane
    image = sitk.DICOMOrient(volume.to_sitk(), CANONICAL_ORIENTATION[plane])
    return Volume.from_sitk(image, modality=volume.modality, source=volume.source)


def resample_like(
    volume: Volume, reference: Volume, interpolation: str = "linear", default_value: float = 0.0, transform=None
) -> Volume:
    """Resample ``volume`` onto the grid of ``reference`` (physical space; optional SimpleITK ``transform``
    maps reference points to ``volume`` points).

    ``interpolation``: "linear", "nearest" (label maps) or "bspline".
    """
    import SimpleITK as sitk

    interpolators = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}
    if interpolation not in interpolators:
        raise ValueError(f"interpolation must be one of {sorted(interpolators)}, not {interpolation!r}")
    image = volume.to_sitk()
    if interpolation != "nearest" and image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        image = sitk.Cast(image, sitk.sitkFloat32)
    out = sitk.Resample(
        image,
        reference.to_sitk(),
        transform if transform is not None else sitk.Transform(),
        interpolators[interpolation],
        float(default_value),
    )
    result = Volume.from_sitk(out, modality=volume.modality, source=volume.source)
    if interpolation == "nearest":
        result.array = result.array.astype(volume.array.dtype, copy=False)
    return result


def resample_to_spacing(volume: Volume, spacing: tuple[float, float, float], interpolation: str = "linear") -> Volume:
    """Resample onto a grid of the same origin, direction and physical extent with a new ``spacing`` (i, j, k)."""
    extent = np.array(volume.size_ijk) * np.array(volume.spacing)
    size = np.maximum(1, np.round(extent / np.array(spacing))).astype(int)
    # Keep the physical centre of the first voxel's footprint: shift the origin by half the change of voxel size.
    shift = volume.direction @ ((np.array(spacing) - np.array(volume.spacing)) / 2.0)
    reference = Volume(
        np.zeros(size[::-1], dtype=np.uint8), spacing, tuple(np.array(volume.origin) + shift), volume.direction
    )
    return resample_like(volume, reference, interpolation)


def crop_to_box(volume: Volume, lower_lps: np.ndarray, upper_lps: np.ndarray, margin_mm: float = 0.0) -> Volume:
    """Crop (without resampling) to the voxels whose centres fall in the LPS box ``[lower, upper]`` grown by ``margin``.

    The box is axis-aligned in LPS; for oblique volumes the crop is the smallest index box containing its corners.
    Raises :class:`CSpineInputError` when the box does not overlap the volume.
    """
    lower = np.asarray(lower_lps, dtype=float) - margin_mm
    upper = np.asarray(upper_lps, dtype=float) + margin_mm
    corners = np.array(
        [[x, y, z] for x in (lower[0], upper[0]) for y in (lower[1], upper[1]) for z in (lower[2], upper[2])]
    )
    ijk = world_to_index(volume, corners)
    lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, np.array(volume.size_ijk))
    if np.any(hi <= lo):
        raise CSpineInputError(volume.source or volume.modality, "the requested region lies outside the image")
    array = volume.array[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
    origin = index_to_world(volume, lo.astype(float))
    return Volume(array.copy(), volume.spacing, tuple(origin), volume.direction.copy(), volume.modality, volume.source)


def physical_bounds(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS bounding box (min, max) of the voxel centres."""
    n = np.array(volume.size_ijk) - 1
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], dtype=float)
    world = index_to_world(volume, corners)
    return world.min(axis=0), world.max(axis=0)


def overlap_fraction(a: Volume, b: Volume) -> float:
    """Fraction of the smaller bounding box's volume shared by the two volumes' LPS bounding boxes (0 = disjoint)."""
    (a_lo, a_hi), (b_lo, b_hi) = physical_bounds(a), physical_bounds(b)
    inter = np.clip(np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo), 0, None)
    smaller = min(np.prod(np.maximum(a_hi - a_lo, 1e-6)), np.prod(np.maximum(b_hi - b_lo, 1e-6)))
    return float(np.prod(inter) / smaller)


def same_grid(a: Volume, b: Volume, atol_mm: float = 1e-3) -> bool:
    """True when both volumes have the same shape and the same voxel centres (within ``atol_mm``)."""
    if a.shape != b.shape:
        return False
    return bool(
        np.allclose(a.spacing, b.spacing, atol=atol_mm)
        and np.allclose(a.origin, b.origin, atol=atol_mm)
        and np.allclose(a.direction, b.direction, atol=1e-5)
    )


def require_same_grid(a: Volume, b: Volume, what: str = "the two volumes") -> None:
    """Raise :class:`CSpineInputError` naming both volumes when their grids differ."""
    if not same_grid(a, b):
        raise CSpineInputError(
            b.source or b.modality,
            f"{what} must share one voxel grid, but {a.source or a.modality or 'the first'} has shape {a.shape} and "
            f"spacing {tuple(round(s, 3) for s in a.spacing)} while this one has shape {b.shape} and spacing "
            f"{tuple(round(s, 3) for s in b.spacing)}",
        )


def physically_equal(a: Volume, b: Volume, atol_mm: float = 1e-3, atol_value: float = 1e-6) -> bool:
    """True when both volumes hold the same value at the same physical points.

    Matrices are not compared directly: a left-handed image may come back from a reader with its k axis flipped and its
    slices reversed, which is the same image. Both are brought to one canonical index order first.
    """
    if sorted(a.shape) != sorted(b.shape):
        return False
    plane = a.plane
    a_c, b_c = reorient(a, plane), reorient(b, plane)
    if not same_grid(a_c, b_c, atol_mm):
        return False
    return bool(np.allclose(a_c.array.astype(float), b_c.array.astype(float), atol=atol_value, rtol=0))
