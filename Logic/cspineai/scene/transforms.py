"""Dense displacement fields <-> ``vtkMRMLGridTransformNode``, and applying a transform to a volume node.

Convention (the same as SimpleITK's ``DisplacementFieldTransform`` and as FPRAN's output): the field is given on a
reference grid (the MRI's) and maps a point x of that space to the point ``x + d(x)`` where the moving image (the CT) is
sampled. In Slicer that is the *resampling* direction, so the field is set with ``SetAndObserveTransformFromParent``;
a CT volume placed under the node is then displayed aligned with the MRI.

Arrays are ``(K, J, I, 3)`` on the reference grid (``[k, j, i]`` as everywhere), vectors in mm. Slicer's vectors are
RAS; SimpleITK's and the phantom's are LPS: :func:`cspineai.geometry.lps_to_ras` flips between them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CSpineInputError
from ..geometry import lps_to_ras
from ..volume import Volume
from .app import SlicerContext, resolve
from .volumes import _numpy_matrix, _vtk_matrix, array_from_image_data, image_data_from_array


def _check_field(displacement: np.ndarray, reference: Volume, what: str) -> np.ndarray:
    displacement = np.asarray(displacement, dtype=np.float64)
    if displacement.shape != (*reference.shape, 3):
        raise CSpineInputError(
            what,
            f"displacement field shape {displacement.shape} does not match the reference grid {reference.shape} x 3",
        )
    if not np.all(np.isfinite(displacement)):
        raise CSpineInputError(what, "the displacement field holds NaN or infinite vectors")
    return displacement


def grid_transform_from_displacement(displacement_ras: np.ndarray, reference: Volume) -> Any:
    """A ``vtkOrientedGridTransform`` (linear interpolation) resampling through ``displacement_ras`` (RAS mm)."""
    import slicer

    displacement_ras = _check_field(displacement_ras, reference, reference.source or "displacement field")
    grid = image_data_from_array(displacement_ras, components=3)
    ijk_to_ras = reference.ijk_to_ras
    # The grid image carries origin and spacing; its axes' directions go to the transform (image data has none here).
    grid.SetOrigin(*ijk_to_ras[:3, 3])
    grid.SetSpacing(*reference.spacing)
    direction = ijk_to_ras[:3, :3] / np.asarray(reference.spacing)
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(grid)
    transform.SetGridDirectionMatrix(_vtk_matrix(_pad4(direction)))
    # Linear, as SimpleITK's DisplacementFieldTransform interpolates: the two then agree to rounding.
    transform.SetInterpolationModeToLinear()
    return transform


def _pad4(matrix3: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = matrix3
    return matrix


def displacement_to_transform_node(
    displacement: np.ndarray,
    reference: Volume,
    name: str = "Displacement",
    space: str = "RAS",
    context: SlicerContext | None = None,
) -> Any:
    """Add a grid transform node resampling through ``displacement`` (on ``reference``'s grid).

    Args:
        displacement: ``(K, J, I, 3)`` vectors in mm, on the grid of ``reference``.
        reference: the fixed image (e.g. T1_sag) whose grid the field lives on.
        space: "RAS" (Slicer) or "LPS" (SimpleITK, phantom, FPRAN export) for the vectors' components.
    """
    displacement = np.asarray(displacement, dtype=np.float64)
    if space.upper() == "LPS":
        displacement = lps_to_ras(displacement)
    elif space.upper() != "RAS":
        raise ValueError(f"space must be 'RAS' or 'LPS', not {space!r}")
    node = resolve(context).scene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
    node.SetAndObserveTransformFromParent(grid_transform_from_displacement(displacement, reference))
    return node


def transform_node_to_displacement(node: Any) -> tuple[np.ndarray, Volume]:
    """The field of a grid transform node: ``(K, J, I, 3)`` RAS mm vectors (resampling direction) and its grid.

    The grid is returned as a :class:`Volume` of zeros carrying the geometry (LPS, like every ``Volume``).
    """
    from ..geometry import LPS_TO_RAS_4

    transform = node.GetTransformFromParentAs("vtkOrientedGridTransform", False)
    if transform is None:
        raise CSpineInputError(node.GetName(), "the transform is not a grid (displacement field) transform")
    grid = transform.GetDisplacementGrid()
    displacement = array_from_image_data(grid).astype(np.float64)
    direction_ras = _numpy_matrix(transform.GetGridDirectionMatrix())[:3, :3]
    spacing = np.array(grid.GetSpacing())
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = direction_ras * spacing
    ijk_to_ras[:3, 3] = grid.GetOrigin()
    ijk_to_lps = LPS_TO_RAS_4 @ ijk_to_ras
    reference = Volume(
        np.zeros(displacement.shape[:3], dtype=np.uint8),
        tuple(spacing),
        tuple(ijk_to_lps[:3, 3]),
        ijk_to_lps[:3, :3] / spacing,
        source=node.GetName(),
    )
    # vtkGridTransform applies scale/shift to the stored vectors; fold them in so the array is the true field in mm.
    displacement = displacement * transform.GetDisplacementScale() + transform.GetDisplacementShift()
    return displacement, reference


def to_sitk_displacement_transform(displacement_ras: np.ndarray, reference: Volume) -> Any:
    """The same field as a SimpleITK ``DisplacementFieldTransform`` (LPS vectors on ``reference``'s grid)."""
    import SimpleITK as sitk

    displacement_lps = lps_to_ras(_check_field(displacement_ras, reference, reference.source or "displacement field"))
    field = sitk.GetImageFromArray(displacement_lps, isVector=True)
    field.SetSpacing(reference.spacing)
    field.SetOrigin(reference.origin)
    field.SetDirection(tuple(reference.direction.ravel()))
    return sitk.DisplacementFieldTransform(field)


def apply_transform(node: Any, transform_node: Any, harden: bool = False, context: SlicerContext | None = None) -> Any:
    """Put ``node`` under ``transform_node`` (the viewer shows it transformed); with ``harden`` bake it into the voxels.

    Hardening a non-linear transform resamples the volume onto a grid enlarged to hold the whole transformed image.
    """
    node.SetAndObserveTransformNodeID(transform_node.GetID())
    if harden:
        hardened(node, context)
    return node


def hardened(node: Any, context: SlicerContext | None = None) -> Any:
    """Bake ``node``'s parent transforms into its data (Slicer's "Harden transform") and return the node."""
    if node.GetParentTransformNode() is None:
        return node
    context = resolve(context)
    if node.GetScene() is not context.scene:
        raise ValueError("the node belongs to another scene: pass that scene's context")
    logic = context.logic("transforms")
    if not logic.hardenTransform(node):
        raise CSpineInputError(node.GetName(), "Slicer could not harden the transform on this node")
    return node
