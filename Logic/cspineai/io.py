"""Reading and writing volumes: NIfTI, NRRD, MHA/MHD and DICOM series, with the checks every input gets.

Every reader returns a :class:`~cspineai.volume.Volume` that has passed :func:`validate_volume`, or raises
:class:`~cspineai.errors.CSpineInputError` naming the file and the problem. Writers are atomic. Nothing read from DICOM
headers beyond geometry and pixel data is kept, so no patient identifier can reach an output or a log.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import CSpineInputError
from .volume import Volume

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
MIN_SPACING_MM, MAX_SPACING_MM = 0.05, 20.0
# Slice positions may wobble by rounding in the headers; beyond this fraction of the spacing a gap is real.
SLICE_SPACING_TOLERANCE = 0.05


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


# --- validation ---------------------------------------------------------------------------------------------------
def validate_volume(volume: Volume, allow_constant: bool = False) -> Volume:
    """Check that ``volume`` is a usable 3-D image; raise :class:`CSpineInputError` naming its source otherwise.

    Checks: three dimensions with at least two voxels along each; not empty; no NaN/inf; not constant (unless
    ``allow_constant``, for label maps); spacing within [0.05, 20] mm; a direction matrix that is a rotation.
    """
    source = volume.source or volume.modality or "volume"
    array = volume.array
    if array.ndim != 3:
        raise CSpineInputError(source, f"a 3-D image is required but this image has {array.ndim} dimension(s)")
    if array.size == 0:
        raise CSpineInputError(source, "the image is empty (no voxels)")
    if min(array.shape) < 2:
        raise CSpineInputError(
            source, f"a 3-D image is required but this is a single 2-D slice (size {volume.size_ijk} along i, j, k)"
        )
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise CSpineInputError(source, f"{bad} voxel(s) are not finite numbers (NaN or infinity)")
    if not allow_constant and array.min() == array.max():
        raise CSpineInputError(source, f"the image is empty: every voxel has the value {array.flat[0]}")
    spacing = np.asarray(volume.spacing)
    if np.any(~np.isfinite(spacing)) or np.any(spacing < MIN_SPACING_MM) or np.any(spacing > MAX_SPACING_MM):
        raise CSpineInputError(
            source,
            f"voxel spacing {tuple(round(float(s), 4) for s in spacing)} mm is outside the plausible range "
            f"[{MIN_SPACING_MM}, {MAX_SPACING_MM}] mm (corrupt header?)",
        )
    direction = volume.direction
    if not np.all(np.isfinite(direction)) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise CSpineInputError(source, "the orientation matrix is not a rotation (corrupt orientation header)")
    return volume


# --- reading ------------------------------------------------------------------------------------------------------
def read_volume(
    path: str | os.PathLike,
    modality: str = "",
    series_uid: str | None = None,
    allow_constant: bool = False,
    dtype: np.dtype | None = None,
) -> Volume:
    """Read a 3-D volume from a NIfTI/NRRD/MHA/MHD file or a DICOM series folder.

    Args:
        path: file, or folder holding one DICOM series (or several, with ``series_uid`` choosing one).
        modality: series name stored on the volume (``"CT_bone"``, ``"T1_sag"``...).
        series_uid: SeriesInstanceUID to pick from a folder holding several series.
        allow_constant: accept constant images (empty label maps).
        dtype: cast the voxels to this type (e.g. ``np.float32``).
    """
    path = Path(path)
    if not path.exists():
        raise CSpineInputError(path, "file or folder not found")
    if path.is_dir():
        volume = read_dicom_series(path, series_uid=series_uid, modality=modality)
    else:
        volume = _read_file(path, modality)
    if dtype is not None:
        volume.array = volume.array.astype(dtype, copy=False)
    return validate_volume(volume, allow_constant=allow_constant)


def _read_file(path: Path, modality: str) -> Volume:
    import SimpleITK as sitk

    if path.stat().st_size == 0:
        raise CSpineInputError(path, "the file is empty (0 bytes)")
    suffix = _suffix(path)
    if suffix not in VOLUME_SUFFIXES and suffix not in ("", ".dcm", ".ima"):
        raise CSpineInputError(
            path, f"unsupported file type {suffix!r}; use NIfTI (.nii, .nii.gz), NRRD, MHA/MHD or a DICOM series folder"
        )
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reader error"
        if "spacing" in detail.lower():  # ITK refuses zero/negative spacing while reading the header
            raise CSpineInputError(
                path, f"voxel spacing is outside the plausible range [{MIN_SPACING_MM}, {MAX_SPACING_MM}] mm: {detail}"
            ) from None
        raise CSpineInputError(path, f"the file cannot be read (corrupt or not an image): {detail}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CSpineInputError(
            path, f"expected a scalar image, found {image.GetNumberOfComponentsPerPixel()} components"
        )
    if image.GetDimension() == 2:
        raise CSpineInputError(path, "a 3-D image is required but this is a 2-D image")
    if image.GetDimension() == 4:
        if image.GetSize()[3] != 1:
            raise CSpineInputError(path, f"a 3-D image is required but this is 4-D with {image.GetSize()[3]} volumes")
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise CSpineInputError(path, f"a 3-D image is required but this image has {image.GetDimension()} dimensions")
    if suffix in (".nii", ".nii.gz") and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        _check_nifti_finite(path)
    return Volume.from_sitk(image, modality=modality, source=str(path))


def _check_nifti_finite(path: Path) -> None:
    """Count NaN/inf in a floating-point NIfTI file as stored.

    SimpleITK's NIfTI reader (2.5) silently turns NaN and infinity into 0, which would hide a corrupt scan; nibabel
    reads the stored values unchanged, so the check is made on its view of the file.
    """
    import nibabel as nib

    data = np.asanyarray(nib.load(str(path)).dataobj)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise CSpineInputError(path, f"{bad} voxel(s) are not finite numbers (NaN or infinity)")


def list_dicom_series(folder: str | os.PathLike) -> list[dict]:
    """The DICOM series in ``folder``: UID, description, modality and number of files each (no patient data)."""
    import pydicom
    import SimpleITK as sitk

    folder = Path(folder)
    series = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        header = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
        series.append(
            {
                "uid": uid,
                "description": str(getattr(header, "SeriesDescription", "")),
                "modality": str(getattr(header, "Modality", "")),
                "files": len(files),
            }
        )
    return series


def read_dicom_series(folder: Path, series_uid: str | None = None, modality: str = "") -> Volume:
    """Read one DICOM series from ``folder``, checking that its slices are complete and uniformly spaced."""
    import pydicom
    import SimpleITK as sitk

    folder = Path(folder)
    series = list_dicom_series(folder)
    if not series:
        raise CSpineInputError(folder, "no DICOM series found in this folder")
    if series_uid is None:
        if len(series) > 1:
            listing = "; ".join(
                f"{s['uid']} ({s['description'] or 'no description'}, {s['files']} files)" for s in series
            )
            raise CSpineInputError(folder, f"the folder holds {len(series)} DICOM series, choose one by UID: {listing}")
        series_uid = series[0]["uid"]
    elif series_uid not in {s["uid"] for s in series}:
        raise CSpineInputError(folder, f"no series with UID {series_uid} in this folder")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
    source = f"{folder} (series {series_uid})"

    if len(files) == 1:
        header = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
        if int(getattr(header, "NumberOfFrames", 1) or 1) > 1:  # enhanced multi-frame DICOM: one file, one volume
            return _read_file(Path(files[0]), modality)
        raise CSpineInputError(source, "a 3-D image is required but the series holds a single 2-D slice")

    # Order slices by their position along the slice normal ourselves and check the gaps: a missing slice would
    # otherwise be silently closed up by the reader and every distance along the spine would be wrong.
    headers = [pydicom.dcmread(f, stop_before_pixels=True, force=True) for f in files]
    try:
        row, col = np.array(headers[0].ImageOrientationPatient, dtype=float).reshape(2, 3)
        positions = np.array([h.ImagePositionPatient for h in headers], dtype=float)
    except (AttributeError, ValueError, TypeError):
        raise CSpineInputError(
            source, "slices lack position/orientation tags; the series cannot be placed in space"
        ) from None
    normal = np.cross(row, col)
    along = positions @ normal
    order = np.argsort(along)
    gaps = np.diff(along[order])
    step = float(np.median(gaps))
    if step <= 1e-6 or np.any(gaps <= 1e-6):
        raise CSpineInputError(source, "two or more slices share one position (duplicated slices)")
    if np.any(np.abs(gaps - step) > SLICE_SPACING_TOLERANCE * step):
        worst = int(np.argmax(np.abs(gaps - step)))
        missing = int(round(gaps[worst] / step)) - 1
        detail = (
            f"{missing} slice(s) appear to be missing after slice {worst + 1}"
            if missing >= 1
            else "the slices are not uniformly spaced"
        )
        raise CSpineInputError(
            source, f"{detail} (gaps from {gaps.min():.3f} to {gaps.max():.3f} mm, expected {step:.3f} mm)"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([files[i] for i in order])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise CSpineInputError(source, f"the series cannot be read: {str(error).strip().splitlines()[-1]}") from None
    return Volume.from_sitk(image, modality=modality, source=str(folder))


# --- writing ------------------------------------------------------------------------------------------------------
def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``volume`` atomically as NIfTI (``.nii``, ``.nii.gz``), NRRD or MHA; return the path."""
    import SimpleITK as sitk

    path = Path(path)
    if _suffix(path) not in WRITABLE_SUFFIXES:
        raise CSpineInputError(path, f"cannot write {_suffix(path)!r}; use one of {', '.join(WRITABLE_SUFFIXES)}")
    image = volume.to_sitk()
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path
