"""Register an axial CT to a sagittal MRI: FPRAN, a classical SimpleITK baseline, or the header alignment alone.

``register(ct, mri)`` returns a :class:`RegistrationResult` whose displacement field lives on the MRI grid and maps
every MRI point ``x`` to its CT point ``x + d(x)`` (SimpleITK ``DisplacementFieldTransform`` and Slicer grid-transform
*FromParent* convention), stored in RAS mm for Slicer; the CT resampled through it onto the MRI grid; and its quality
figures (% folding, SD of log-Jacobian) and runtime. The scene layer turns the field into a grid transform node under
which the CT overlays the MRI.

Methods:

- ``"identity"``: trust the headers (zero displacement); the CT resampled onto the MRI grid.
- ``"bspline"``: the classical baseline, SimpleITK Mattes MI restricted to the spine (CT bone mask, MRI region around
  it): translation search, rigid, then a coarse cubic B-spline; bounded iteration counts (:func:`register_bspline`).
- ``"fpran"``: :class:`cspineai.nn.fpran.RegistrationNet` on canonically reoriented working grids.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from .errors import CSpineInputError
from .geometry import lps_to_ras, overlap_fraction, reorient, resample_like, resample_to_spacing
from .metrics.registration import jacobian_figures
from .volume import Volume

log = logging.getLogger(__name__)

METHODS = ("fpran", "bspline", "identity")

#: Smallest shared fraction of the two bounding boxes accepted as "the same region of the same patient".
MIN_OVERLAP = 0.05


@dataclasses.dataclass
class RegistrationResult:
    """Outcome of :func:`register`.

    Attributes:
        displacement_ras: ``[k, j, i, 3]`` float32 on the MRI grid, RAS mm: MRI point x -> CT point x + d(x).
        reference: the MRI volume whose grid the field and ``warped_ct`` live on.
        warped_ct: the CT resampled (linear) onto the MRI grid through the field; the CT's minimum (air) outside it.
        folding_percent: % of MRI voxels whose Jacobian determinant is <= 0.
        sd_log_jacobian: SD of the log Jacobian determinant over the MRI grid.
        seconds: wall-clock time of the registration itself (excluding the figures).
        method: which method produced it.
    """

    displacement_ras: np.ndarray
    reference: Volume
    warped_ct: Volume
    folding_percent: float
    sd_log_jacobian: float
    seconds: float
    method: str

    @property
    def displacement_lps(self) -> np.ndarray:
        """The field with LPS vectors (SimpleITK, files)."""
        return lps_to_ras(self.displacement_ras).astype(np.float32)

    def to_sitk_transform(self) -> Any:
        """A ``SimpleITK.DisplacementFieldTransform`` (LPS) usable with ``sitk.Resample(ct, mri, transform)``."""
        return displacement_transform(self.displacement_lps, self.reference)

    def map_points(self, points_lps: np.ndarray) -> np.ndarray:
        """CT positions (LPS mm) of MRI points ``(N, 3)`` (LPS mm): ``x + d(x)``, field interpolated linearly."""
        transform = self.to_sitk_transform()
        return np.array([transform.TransformPoint(tuple(float(c) for c in p)) for p in np.asarray(points_lps)])


# --- field <-> SimpleITK ---------------------------------------------------------------------------------------------


def displacement_image(displacement_lps: np.ndarray, grid: Volume) -> Any:
    """A float64 vector ``SimpleITK.Image`` of an LPS ``[k, j, i, 3]`` field on ``grid``."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.asarray(displacement_lps, dtype=np.float64), isVector=True)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(tuple(grid.direction.ravel()))
    return image


def displacement_transform(displacement_lps: np.ndarray, grid: Volume) -> Any:
    """``SimpleITK.DisplacementFieldTransform`` of an LPS field on ``grid`` (outside the grid: zero displacement)."""
    import SimpleITK as sitk

    return sitk.DisplacementFieldTransform(displacement_image(displacement_lps, grid))


def field_from_transform(transform: Any, grid: Volume) -> np.ndarray:
    """Dense LPS displacement ``[k, j, i, 3]`` of any SimpleITK transform sampled at the voxel centres of ``grid``."""
    import SimpleITK as sitk

    field = sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, grid.size_ijk, grid.origin, grid.spacing, tuple(grid.direction.ravel())
    )
    return sitk.GetArrayFromImage(field)


def resample_field(displacement_lps: np.ndarray, source: Volume, target: Volume) -> np.ndarray:
    """Move an LPS field from one grid to another covering the same region (linear; nearest value beyond the edge)."""
    import SimpleITK as sitk

    image = displacement_image(displacement_lps, source)
    out = sitk.Resample(image, target.to_sitk(), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64,
                        True)  # useNearestNeighborExtrapolator: a working grid may stop half a voxel short
    return sitk.GetArrayFromImage(out)


# --- checks ---------------------------------------------------------------------------------------------------------


def check_pair(ct: Volume, mri: Volume, min_overlap: float = MIN_OVERLAP) -> None:
    """Refuse a CT/MRI pair that cannot be registered: not 3-D, or not covering the same physical region."""
    for volume, name in ((ct, "CT"), (mri, "MRI")):
        if volume.array.ndim != 3 or min(volume.shape) < 2:
            raise CSpineInputError(
                volume.source or name, f"the {name} must be a 3-D volume (2+ voxels per axis), got shape {volume.shape}"
            )
    fraction = overlap_fraction(ct, mri)
    if fraction < min_overlap:
        raise CSpineInputError(
            f"{ct.source or ct.modality or 'CT'} / {mri.source or mri.modality or 'MRI'}",
            f"the CT and MRI share {100 * fraction:.1f}% of their physical extent (at least "
            f"{100 * min_overlap:.0f}% is needed): they do not cover the same region, so they are not two scans "
            "of the same patient's neck in one frame (check that both series belong to this patient and that their "
            "position headers are intact)",
        )


# --- methods --------------------------------------------------------------------------------------------------------


def _identity(ct: Volume, mri: Volume) -> np.ndarray:
    return np.zeros((*mri.shape, 3), dtype=np.float64)


def spine_masks(ct: Volume, mri: Volume, bone_hu: float = 200.0, ct_margin_mm: float = 4.0,
                mri_margin_mm: float = 15.0) -> tuple[Any, Any]:
    """Metric masks of the baseline (``SimpleITK`` uint8 images): the CT's bone, and the MRI region around it.

    CT: voxels above ``bone_hu`` HU, dilated by ``ct_margin_mm`` so that the bone's edges (where the information is)
    count. MRI: that CT mask carried onto the MRI grid by the headers, dilated by ``mri_margin_mm`` (a bound on the
    residual misalignment at the spine), so that no MRI sample outside the spine region drives the metric. Why: MI over
    the whole field of view is dominated by the skin-air outline and the soft tissue, which move differently from the
    articulated spine (flexion); aligning them makes the spine worse than the headers alone.
    """
    import SimpleITK as sitk

    def dilate(mask, volume: Volume, margin_mm: float):
        radius = [max(1, int(round(margin_mm / s))) for s in volume.spacing]
        return sitk.BinaryDilate(mask, radius, sitk.sitkBall)

    ct_image = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)  # int16 CTs: the threshold's bounds must fit the type
    bone = sitk.Cast(sitk.BinaryThreshold(ct_image, float(bone_hu), 1e9, 1, 0), sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(bone)):
        raise CSpineInputError(ct.source or "CT", f"no voxel above {bone_hu:g} HU: the B-spline baseline needs the "
                                                  "CT's bone (is this a CT in Hounsfield units?)")
    ct_mask = dilate(bone, ct, ct_margin_mm)
    on_mri = sitk.Resample(bone, mri.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(on_mri)):
        raise CSpineInputError(f"{ct.source or 'CT'} / {mri.source or 'MRI'}",
                               "the CT's bone lies outside the MRI's field of view at the header alignment")
    return ct_mask, dilate(on_mri, mri, mri_margin_mm)


def _execute_or_reset(reg, fixed, moving, transform, stage: str) -> None:
    """Run one registration stage; if ITK gives up (the optimiser drove the images apart: "all samples map outside
    the moving image"), return that stage to its start (identity) instead of failing the whole registration."""
    start = transform.GetParameters()
    try:
        reg.Execute(fixed, moving)
    except RuntimeError as error:
        log.warning("B-spline baseline: the %s stage failed (%s); keeping its starting transform", stage,
                    str(error).strip().splitlines()[-1][:160])
        transform.SetParameters(start)


def register_bspline(
    ct: Volume,
    mri: Volume,
    mesh_spacing_mm: float = 50.0,
    rigid_iterations: int = 100,
    bspline_iterations: int = 20,
    bone_hu: float = 200.0,
    mri_margin_mm: float = 15.0,
    ct_margin_mm: float = 4.0,
    learning_rate: float = 2.0,
    sampling_fraction: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Classical baseline: rigid then B-spline, Mattes MI restricted to the spine (:func:`spine_masks`); LPS field.

    1. Rigid (Euler about the centre of the MRI mask), started from the header alignment (identity) like FPRAN, on two
       resolutions (shrink 4-2, smoothing 2-1 mm; full resolution added time, not accuracy). A coarse translation
       search before it (metric evaluated on a 4 mm grid for +-10-20 mm offsets) was tried and removed: with the
       moving mask the number of samples changes with the offset, which biased the search to a wrong level on the
       test phantom and did not help on the cohort.
    2. Cubic B-spline (control points every ``mesh_spacing_mm``, L-BFGS-B, half resolution) for the flexion; a coarse
       mesh keeps the field smooth (a 30 mm mesh folded several % of the voxels on the cohort).

    Fixed iteration counts keep the time bounded. The metric uses every voxel of the masks by default: with random
    sampling (``sampling_fraction < 1``) ITK's multi-threaded sampling is not repeatable.
    """
    import SimpleITK as sitk

    start = time.perf_counter()
    fixed = sitk.Cast(mri.to_sitk(), sitk.sitkFloat32)
    moving = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)
    ct_mask, mri_mask = spine_masks(ct, mri, bone_hu, ct_margin_mm, mri_margin_mm)

    def method(shrink, smooth) -> sitk.ImageRegistrationMethod:
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricFixedMask(mri_mask)
        reg.SetMetricMovingMask(ct_mask)
        if sampling_fraction < 1.0:
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(sampling_fraction, seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetShrinkFactorsPerLevel(list(shrink))
        reg.SetSmoothingSigmasPerLevel(list(smooth))
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        return reg

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mri_mask)
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(stats.GetCentroid(1))

    reg = method([4, 2], [2.0, 1.0])
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate, minStep=1e-3, numberOfIterations=rigid_iterations, gradientMagnitudeTolerance=1e-6,
        relaxationFactor=0.7,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(rigid, inPlace=True)
    _execute_or_reset(reg, fixed, moving, rigid, "rigid")
    rigid_seconds = time.perf_counter() - start
    if bspline_iterations <= 0:
        return field_from_transform(rigid, mri)

    extent = np.array(fixed.GetSize()) * np.array(fixed.GetSpacing())
    mesh = [max(1, int(round(e / mesh_spacing_mm))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    reg = method([2], [1.0])
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=bspline_iterations,
                             maximumNumberOfCorrections=5)
    reg.SetMovingInitialTransform(rigid)
    reg.SetInitialTransform(bspline, inPlace=True)
    _execute_or_reset(reg, fixed, moving, bspline, "B-spline")
    log.info("B-spline baseline: rigid %.1f s, B-spline %.1f s", rigid_seconds,
             time.perf_counter() - start - rigid_seconds)
    # ITK composite transforms apply the last-added transform first: x -> rigid(bspline(x)), as optimised above.
    return field_from_transform(sitk.CompositeTransform([rigid, bspline]), mri)


def normalise_intensity(array: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the ``low``..``high`` percentiles to 0..1 (clipped): one scale for CT (HU) and MRI (arbitrary units)."""
    array = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(array, [low, high])
    return np.clip((array - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)


def working_grids(ct: Volume, mri: Volume, spacing_mm: float | None) -> tuple[Volume, Volume]:
    """CT and MRI reoriented to their canonical planes and, when ``spacing_mm`` is set, resampled so that no axis is
    finer than it (thick slice axes keep their spacing)."""
    ct_w, mri_w = reorient(ct, ct.plane), reorient(mri, mri.plane)
    if spacing_mm:
        ct_w = resample_to_spacing(ct_w, tuple(max(s, spacing_mm) for s in ct_w.spacing))
        mri_w = resample_to_spacing(mri_w, tuple(max(s, spacing_mm) for s in mri_w.spacing))
    return ct_w, mri_w


def predict_fpran_field(model, ct: Volume, mri: Volume, spacing_mm: float | None = 1.5) -> np.ndarray:
    """Run a :class:`~cspineai.nn.fpran.RegistrationNet` and return its LPS field on the original MRI grid."""
    import torch

    from .geometry import index_to_world
    from .nn.fpran import base_transform_from_volumes, index_to_normalised

    ct_w, mri_w = working_grids(ct, mri, spacing_mm)
    base = torch.as_tensor(base_transform_from_volumes(mri_w, ct_w), dtype=torch.float32)
    ct_t = torch.from_numpy(normalise_intensity(ct_w.array))[None, None]
    mri_t = torch.from_numpy(normalise_intensity(mri_w.array))[None, None]
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        out = model(ct_t.to(device), mri_t.to(device), base.to(device))
    # CT normalised coordinates of every MRI working voxel -> CT index -> LPS; minus the voxel's own LPS position.
    mapping = out.mapping[0].double().cpu().numpy()  # [k, j, i, 3] (x, y, z)
    normalised_to_index = np.linalg.inv(index_to_normalised(ct_w.size_ijk))
    ct_lps = index_to_world(ct_w, mapping @ normalised_to_index[:3, :3].T + normalised_to_index[:3, 3])
    k, j, i = np.meshgrid(*[np.arange(n) for n in mri_w.shape], indexing="ij")
    mri_lps = index_to_world(mri_w, np.stack([i, j, k], axis=-1).astype(float))
    return resample_field(ct_lps - mri_lps, mri_w, mri)


#: FPRAN working spacing (mm) for a model that does not state the one it was trained at.
DEFAULT_SPACING_MM = 1.5

#: Registry id of the shipped registration-only FPRAN (see :mod:`cspineai.models.registry`).
DEFAULT_MODEL_ID = "fpran-registration"


def load_default_model():
    """The shipped registration model; :class:`CSpineModelError` (naming the registered ids) while none is."""
    from .models.registry import load_model

    return load_model(DEFAULT_MODEL_ID)[0]


# --- public API -----------------------------------------------------------------------------------------------------


def register(
    ct: Volume,
    mri: Volume,
    model=None,
    method: str = "fpran",
    spacing_mm: float | None | str = "model",
    **options: Any,
) -> RegistrationResult:
    """Register ``ct`` (moving) to ``mri`` (fixed).

    Args:
        ct: the CT volume (any orientation; axial expected).
        mri: the MRI volume whose grid the result lives on.
        model: a :class:`~cspineai.nn.fpran.RegistrationNet` for ``method="fpran"`` (default: the shipped model).
        method: ``"fpran"``, ``"bspline"`` or ``"identity"``.
        spacing_mm: FPRAN working resolution (no axis finer than this; None keeps the native grids); ``"model"``
            (default) uses the spacing the model was trained at (``model.spacing_mm``, set by the registration task),
            else :data:`DEFAULT_SPACING_MM`.
        options: passed to :func:`register_bspline` (mesh spacing, iteration counts) for ``"bspline"``.

    Raises:
        CSpineInputError: the two volumes do not cover the same physical region, or are not 3-D.
        CSpineModelError: FPRAN requested but no model given or installed.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    check_pair(ct, mri)
    start = time.perf_counter()
    if method == "identity":
        field = _identity(ct, mri)
    elif method == "bspline":
        field = register_bspline(ct, mri, **options)
    else:
        model = model if model is not None else load_default_model()
        if spacing_mm == "model":
            spacing_mm = float(getattr(model, "spacing_mm", DEFAULT_SPACING_MM))
        field = predict_fpran_field(model, ct, mri, spacing_mm)
    seconds = time.perf_counter() - start

    field = np.asarray(field, dtype=np.float64)
    transform = None if method == "identity" else displacement_transform(field, mri)
    warped = resample_like(ct, mri, "linear", default_value=float(np.min(ct.array)), transform=transform)
    figures = jacobian_figures(field, mri.spacing, mri.direction)
    log.info("registration %s: %.2f s, folding %.3f%%", method, seconds, figures["folding_percent"])
    return RegistrationResult(
        displacement_ras=lps_to_ras(field).astype(np.float32),
        reference=mri,
        warped_ct=warped,
        folding_percent=figures["folding_percent"],
        sd_log_jacobian=figures["sd_log_jacobian"],
        seconds=seconds,
        method=method,
    )
