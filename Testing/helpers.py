"""Test volumes with known geometry, and the repository's scripts as modules, shared by the test modules (import as
``from helpers import ...``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import SimpleITK as sitk

from cspineai.volume import Volume

REPO = Path(__file__).resolve().parents[1]


def load_script(relative_path: str) -> ModuleType:
    """A script of the repository (``benchmarks/bench_segmentation.py``, ``Training/cohorts.py``) imported as a module
    named after its file, so that its ``main(argv)`` and helpers can be called. It is registered in ``sys.modules``
    (dataclasses and pickling look their module up there)."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def rotation(axis: str, degrees: float) -> np.ndarray:
    """3x3 rotation about an LPS axis."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


#: Direction matrices (columns: LPS directions of i, j, k) for the acquisitions the project meets.
DIRECTIONS = {
    "axial": np.eye(3),
    # sagittal as scanners write it: i towards P, j towards I, k towards L
    "sagittal": np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float),
    "oblique": rotation("x", 17.0) @ rotation("z", -9.0),
    # left-handed (determinant -1): k runs towards I
    "left_handed": np.diag([1.0, 1.0, -1.0]),
}


def make_volume(
    kind: str = "axial", shape=(12, 20, 16), spacing=(0.7, 0.8, 2.5), dtype=np.int16, seed=0, **kw
) -> Volume:
    """A volume of random-but-structured values (a gradient plus noise) with one of :data:`DIRECTIONS`."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    array = (10 * i + 3 * j + 50 * k + rng.integers(0, 5, size=shape)).astype(dtype)
    return Volume(array, spacing, kw.pop("origin", (-12.5, 30.25, 101.0)), DIRECTIONS[kind], **kw)


def write_dicom_series(
    volume: Volume,
    folder,
    series_uid="1.2.826.0.1.3680043.2.1125.1",
    description="T2 SAG",
    skip: tuple[int, ...] = (),
    patient_name="DOE^JANE",
    modality="MR",
    shift_slice=None,
):
    """Write ``volume`` as a DICOM series (one file per k slice); ``skip`` leaves slices out, ``shift_slice=(n, mm)``
    moves slice n along the normal so that spacing becomes non-uniform. Returns the folder."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(volume.to_sitk(), sitk.sitkInt16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for n in range(image.GetDepth()):
        if n in skip:
            continue
        slice_ = image[:, :, n]
        position = np.array(image.TransformIndexToPhysicalPoint((0, 0, n)))
        if shift_slice and shift_slice[0] == n:
            position = position + shift_slice[1] * direction[:, 2]
        tags = {
            "0010|0010": patient_name,
            "0010|0020": "PID-12345",
            "0008|0060": modality,
            "0020|000d": series_uid + ".0",
            "0020|000e": series_uid,
            "0008|103e": description,
            "0020|0013": str(n + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in np.concatenate([direction[:, 0], direction[:, 1]])),
            "0028|0030": f"{volume.spacing[1]:.6f}\\{volume.spacing[0]:.6f}",
            "0018|0050": f"{volume.spacing[2]:.6f}",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series_uid}.{n + 1}",
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{n:03d}.dcm"))
        writer.Execute(slice_)
    return folder
