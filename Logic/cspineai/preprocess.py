"""From a series as acquired to the network's input: a fixed working grid per series and intensity normalisation.

Each series stays in its own acquisition geometry (methods.md: models see each modality in its own grid; FPRAN learns
the cross-view mapping). It is resampled onto a *working grid*: the series' own orientation brought to canonical order
(:func:`cspineai.geometry.reorient`: axial 'LPS', sagittal 'PIR'), a fixed spacing and a fixed size, centred on the
physical centre of the series' field of view. ``k`` (tensor axis D) stays the slice axis.

Working grids (``(D, H, W)`` voxels = (k, j, i); spacing (i, j, k) mm) and why:

============  ===============  ===================  ==================================================================
series        size (D, H, W)   spacing i, j, k mm   field of view
============  ===============  ===================  ==================================================================
T1_sag/T2_sag (16, 128, 128)   1.25, 1.25, 3.0      160 mm SI x 160 mm AP in-plane, 48 mm LR (cord, canal, facets)
T2_tra        (32, 96, 96)     1.5, 1.5, 4.5        144 mm LR x 144 mm AP, 144 mm SI (C2..T1)
CT_bone       (32, 96, 96)     1.5, 1.5, 4.5        as T2_tra
CT_tissue     (32, 96, 96)     1.5, 1.5, 4.5        as T2_tra
============  ===============  ===================  ==================================================================

The fields of view cover C2..T1 (about 130 mm of spine) with the neck's soft tissue; the spacings keep the slice axis
thick (3 mm sagittal and 4.5 mm axial slices are clinical values), which is the anisotropy ABPDC is designed for. The
sizes were chosen for cost: the backbones reduce them to 2x8x8 and 2x6x6 at level 4, one case through both branches
is meant to take under a second on two CPU cores (``benchmarks/bench_abpdc.py`` measures it) and the default model
stays under 10 MB. A fixed physical
spacing (rather than stretching each field of view onto the grid) keeps millimetres meaning the same thing in every
case, which matters for canal and cord sizes. Where the field of view is smaller than the working grid the outside is
filled with air (-1024 HU for CT, the series' lowest value for MRI); where it is larger, the centre is kept.

Before downsampling, each axis whose spacing grows is smoothed with a Gaussian of sigma = (new - old) / 2 mm
(scikit-image's anti-aliasing rule) so that fine texture does not alias. A model trained on a reduced working size
(:func:`grid_for_size`: same field of view, coarser spacing) is fed through the same code with its own grid.

Intensities (float32, outside values clipped):

- ``CT_bone``: bone window, width 2000 / level 500 HU, mapped to [0, 1];
- ``CT_tissue``: soft-tissue window, width 400 / level 40 HU, mapped to [0, 1];
- MRI (``T1_sag``, ``T2_sag``, ``T2_tra``): the series' 0.5th and 99.5th percentiles mapped to 0 and 1 (MRI has no
  absolute scale), computed on the series as acquired, before resampling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import CSpineInputError
from .geometry import reorient, require_plane, resample_like
from .io import validate_volume
from .series import CT_SERIES, SERIES_PLANE
from .volume import Volume


@dataclasses.dataclass(frozen=True)
class WorkingGrid:
    """Fixed size ``(D, H, W)`` (voxels along k, j, i) and spacing ``(si, sj, sk)`` mm of a series' network input."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]


_SAGITTAL_GRID = WorkingGrid((16, 128, 128), (1.25, 1.25, 3.0))
_AXIAL_GRID = WorkingGrid((32, 96, 96), (1.5, 1.5, 4.5))
WORKING_GRIDS: dict[str, WorkingGrid] = {
    "T1_sag": _SAGITTAL_GRID,
    "T2_sag": _SAGITTAL_GRID,
    "T2_tra": _AXIAL_GRID,
    "CT_bone": _AXIAL_GRID,
    "CT_tissue": _AXIAL_GRID,
}

#: CT windows (width, level) in HU.
CT_WINDOWS = {"CT_bone": (2000.0, 500.0), "CT_tissue": (400.0, 40.0)}
MRI_PERCENTILES = (0.5, 99.5)
CT_AIR_HU = -1024.0
# Percentiles of very large series are taken on a regular subsample: the value moves by far less than the noise.
_PERCENTILE_SAMPLE = 2_000_000


@dataclasses.dataclass
class PreparedSeries:
    """One series ready for its branch.

    Attributes:
        series: series name (``"CT_bone"``, ``"T1_sag"``...).
        tensor: float32 ``(1, D, H, W)`` (channel first, D = slice axis), intensities in [0, 1].
        grid: the working grid as a :class:`Volume` holding the same normalised array ``(D, H, W)``; its geometry maps a
            network voxel (or a saliency map on this grid) back to LPS/RAS millimetres.
    """

    series: str
    tensor: object  # torch.Tensor; typed loosely so that importing this module does not import torch
    grid: Volume


def _name(volume: Volume, series: str) -> str:
    return f"{series} series ({volume.source})" if volume.source else f"{series} series"


def check_series(volume: Volume | None, series: str) -> Volume:
    """Refuse a missing series, a 2-D image, an unusable volume or one acquired in the wrong plane."""
    if series not in SERIES_PLANE:
        raise CSpineInputError(series, f"unknown series; expected one of {', '.join(SERIES_PLANE)}")
    if volume is None:
        raise CSpineInputError(f"{series} series", "is required by this model but was not provided")
    array = np.asarray(volume.array)
    if array.ndim != 3 or min(array.shape) < 2:
        raise CSpineInputError(
            _name(volume, series),
            f"a 3-D volume is required but this is a 2-D image (array shape {array.shape}); choose the whole series",
        )
    try:
        validate_volume(volume)
        require_plane(volume, SERIES_PLANE[series])
    except CSpineInputError as error:
        raise CSpineInputError(_name(volume, series), error.problem) from None
    return volume


def working_grid(volume: Volume, series: str, grid: WorkingGrid | None = None) -> Volume:
    """The working grid of ``series`` (default :data:`WORKING_GRIDS`) centred on ``volume``'s field of view, as an
    empty :class:`Volume` (uint8)."""
    grid = grid or WORKING_GRIDS[series]
    direction = reorient(volume, SERIES_PLANE[series]).direction
    size_ijk = np.array(grid.size[::-1], dtype=float)
    spacing = np.array(grid.spacing)
    centre_index = (np.array(volume.size_ijk, dtype=float) - 1.0) / 2.0
    centre = volume.ijk_to_lps[:3, :3] @ centre_index + volume.ijk_to_lps[:3, 3]
    origin = centre - direction @ (spacing * (size_ijk - 1.0) / 2.0)
    return Volume(np.zeros(grid.size, dtype=np.uint8), tuple(spacing), tuple(origin), direction, series, "working grid")


def normalise_intensity(array: np.ndarray, series: str, reference: np.ndarray | None = None) -> np.ndarray:
    """Map intensities to [0, 1] float32 as the module docstring says; MRI percentiles come from ``reference``
    (default: ``array`` itself)."""
    array = np.asarray(array, dtype=np.float32)
    if series in CT_WINDOWS:
        width, level = CT_WINDOWS[series]
        low = level - width / 2.0
    else:
        low, high = mri_percentiles(array if reference is None else reference)
        width = max(high - low, 1e-6)
    return np.clip((array - low) / width, 0.0, 1.0).astype(np.float32)


def mri_percentiles(array: np.ndarray) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of an MRI series (on a regular subsample for very large series)."""
    flat = np.asarray(array).ravel()
    if flat.size > _PERCENTILE_SAMPLE:
        flat = flat[:: int(np.ceil(flat.size / _PERCENTILE_SAMPLE))]
    low, high = np.percentile(flat, MRI_PERCENTILES)
    return float(low), float(high)


def _antialias(volume: Volume, target_spacing: Sequence[float]) -> Volume:
    import SimpleITK as sitk

    sigma = np.maximum(np.asarray(target_spacing) - np.asarray(volume.spacing), 0.0) / 2.0
    image = None
    for axis, (s, n) in enumerate(zip(sigma, volume.size_ijk, strict=True)):
        # Recursive (IIR) Gaussian, one axis at a time: its cost does not grow with sigma; it needs 4 voxels per axis.
        if s > 0 and n >= 4:
            image = sitk.Cast(volume.to_sitk(), sitk.sitkFloat32) if image is None else image
            image = sitk.RecursiveGaussian(image, float(s), False, sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    if image is None:
        return volume
    return Volume.from_sitk(image, modality=volume.modality, source=volume.source)


def grid_for_size(series: str, size: Sequence[int]) -> WorkingGrid:
    """A working grid of ``size`` ``(D, H, W)`` covering the same field of view as the default grid of ``series``
    (smaller sizes give coarser spacings: the reduced protocol of the ablation)."""
    default = WORKING_GRIDS[series]
    size = tuple(int(n) for n in size)
    if len(size) != 3 or min(size) < 1:
        raise CSpineInputError(series, f"a working size needs three positive voxel counts (D, H, W), got {size}")
    fov = np.array(default.spacing) * np.array(default.size[::-1])
    spacing = tuple(float(f / n) for f, n in zip(fov, size[::-1], strict=True))
    return WorkingGrid(size, spacing)


def model_grids(model) -> dict[str, WorkingGrid]:
    """The working grid of every series a classifier reads, from its configuration's ``input_sizes``: the grids it
    was trained on, which prediction and saliency must both use (series it has no size for take the defaults)."""
    sizes = dict(getattr(model, "config", {}).get("input_sizes") or {})
    return {name: grid_for_size(name, sizes[name]) for name in model.series if name in sizes}


def prepare_series(volume: Volume, series: str, grid: WorkingGrid | None = None) -> PreparedSeries:
    """Check, resample onto the working grid (default :data:`WORKING_GRIDS`) and normalise one series."""
    import torch

    volume = check_series(volume, series)
    reference = working_grid(volume, series, grid)
    # Spacing of the source along each working axis (the source may be permuted relative to the canonical order).
    canonical = reorient(volume, SERIES_PLANE[series])
    source = dataclasses.replace(canonical, array=canonical.array.astype(np.float32, copy=False))
    smoothed = _antialias(source, reference.spacing)
    if series in CT_SERIES:
        outside = CT_AIR_HU
        stats = None
    else:
        outside = float(np.min(volume.array))
        stats = volume.array
    resampled = resample_like(smoothed, reference, "linear", default_value=outside)
    array = normalise_intensity(resampled.array, series, reference=stats)
    grid = dataclasses.replace(reference, array=array, source=f"{series} working grid")
    return PreparedSeries(series, torch.from_numpy(array.copy())[None], grid)


def prepare_case(series: Mapping[str, Volume | None], required: Sequence[str],
                 grids: Mapping[str, WorkingGrid] | None = None) -> dict[str, PreparedSeries]:
    """Prepare the ``required`` series of one case (``grids`` overrides working grids by series name); a missing,
    2-D or unusable series raises :class:`CSpineInputError` naming it (all are checked before any is resampled)."""
    for name in required:
        check_series(series.get(name), name)
    grids = grids or {}
    return {name: prepare_series(series[name], name, grids.get(name)) for name in required}


__all__ = [
    "CT_WINDOWS",
    "MRI_PERCENTILES",
    "WORKING_GRIDS",
    "PreparedSeries",
    "WorkingGrid",
    "check_series",
    "grid_for_size",
    "model_grids",
    "mri_percentiles",
    "normalise_intensity",
    "prepare_case",
    "prepare_series",
    "working_grid",
]
