"""The ``Volume`` type: a 3-D image with its physical geometry.

Conventions (the same as SimpleITK, so that conversion is exact and free):

- ``array`` is indexed ``[k, j, i]``; ``k`` is the slice axis of the acquisition (SI for axial series, LR for sagittal).
- ``spacing`` is ``(si, sj, sk)`` in mm, ``origin`` the LPS position (mm) of voxel ``(i, j, k) = (0, 0, 0)``, and
  ``direction`` a 3x3 matrix whose columns are the LPS unit vectors of the i, j and k axes.
- Slicer's world is RAS; :mod:`cspineai.geometry` holds every LPS/RAS conversion.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(eq=False)
class Volume:
    """A 3-D image in LPS physical space.

    Args:
        array: voxel values, shape ``(K, J, I)``.
        spacing: voxel size along i, j, k in mm.
        origin: LPS position in mm of the centre of voxel (0, 0, 0).
        direction: 3x3 matrix; column n is the LPS unit direction of index axis n (i, j, k).
        modality: series name such as ``"CT_bone"`` or ``"T1_sag"`` (empty when unknown).
        source: where the volume came from (a path or node name), used in error messages; never a patient identifier.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    modality: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)

    # --- shape and grid -------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape ``(K, J, I)``."""
        return tuple(self.array.shape)

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along i, j, k (SimpleITK's ``GetSize`` order)."""
        return tuple(int(n) for n in self.array.shape[::-1])

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping a continuous index ``(i, j, k, 1)`` to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping ``(i, j, k, 1)`` to RAS mm (Slicer's IJKToRAS)."""
        from .geometry import LPS_TO_RAS_4

        return LPS_TO_RAS_4 @ self.ijk_to_lps

    def with_array(self, array: np.ndarray, modality: str | None = None) -> Volume:
        """A volume on the same grid holding ``array`` (shape must match)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match the grid {self.array.shape}")
        return dataclasses.replace(self, array=array, modality=self.modality if modality is None else modality)

    def copy(self) -> Volume:
        return dataclasses.replace(self, array=self.array.copy(), direction=self.direction.copy())

    # --- SimpleITK ------------------------------------------------------------------------------------------------
    def to_sitk(self) -> Any:
        """A ``SimpleITK.Image`` with the same voxels and geometry."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array), isVector=False)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.ravel()))
        return image

    @classmethod
    def from_sitk(cls, image: Any, modality: str = "", source: str = "") -> Volume:
        """Wrap a 3-D ``SimpleITK.Image`` (its array is copied)."""
        import SimpleITK as sitk

        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=np.array(image.GetDirection()).reshape(3, 3),
            modality=modality,
            source=source,
        )

    def __repr__(self) -> str:
        return (
            f"Volume(modality={self.modality!r}, shape={self.shape}, dtype={self.array.dtype}, "
            f"spacing={tuple(round(s, 4) for s in self.spacing)}, plane={self.plane!r})"
        )

    @property
    def plane(self) -> str:
        """Acquisition plane from the slice axis direction: ``"axial"``, ``"sagittal"`` or ``"coronal"``."""
        from .geometry import acquisition_plane

        return acquisition_plane(self.direction)
