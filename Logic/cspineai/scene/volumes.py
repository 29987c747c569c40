"""``Volume`` <-> ``vtkMRMLScalarVolumeNode`` / ``vtkMRMLLabelMapVolumeNode`` with exact geometry.

Slicer keeps a volume's geometry on the node (IJKToRAS) and its voxels in a ``vtkImageData`` with unit spacing and zero
origin; ``Volume.ijk_to_ras`` is exactly that matrix, so the conversion is a matrix copy both ways. Voxel order is the
same on both sides (``[k, j, i]`` in numpy is VTK's i-fastest memory layout); arrays are always copied so that neither
side can change the other's memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CSpineInputError
from ..geometry import LPS_TO_RAS_4
from ..volume import Volume
from .app import SlicerContext, resolve


def _vtk_matrix(matrix: np.ndarray) -> Any:
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    vtk_matrix = vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            vtk_matrix.SetElement(row, col, float(matrix[row, col]))
    return vtk_matrix


def _numpy_matrix(vtk_matrix: Any) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def image_data_from_array(array: np.ndarray, components: int = 1) -> Any:
    """A ``vtkImageData`` (unit spacing, zero origin) holding a deep copy of ``array``.

    Args:
        array: ``(K, J, I)`` scalars, or ``(K, J, I, C)`` with ``components == C`` (e.g. displacement vectors).
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    array = np.asarray(array)
    shape = array.shape[:3]
    image = vtkImageData()
    image.SetDimensions(shape[2], shape[1], shape[0])
    flat = (
        np.ascontiguousarray(array).reshape(-1, components) if components > 1 else np.ascontiguousarray(array).ravel()
    )
    if flat.dtype == np.bool_:
        flat = flat.astype(np.uint8)
    scalars = numpy_to_vtk(flat, deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def array_from_image_data(image: Any) -> np.ndarray:
    """A copy of a ``vtkImageData``'s scalars as ``(K, J, I)`` (or ``(K, J, I, C)`` for vector images)."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    dims = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    array = vtk_to_numpy(scalars).copy()  # vtk_to_numpy is a view into VTK memory
    components = scalars.GetNumberOfComponents()
    shape = (dims[2], dims[1], dims[0]) + ((components,) if components > 1 else ())
    return array.reshape(shape)


def set_node_geometry(node: Any, volume: Volume) -> None:
    """Give a volume (or grid) node the IJK->RAS geometry of ``volume``."""
    node.SetIJKToRASMatrix(_vtk_matrix(volume.ijk_to_ras))


def volume_to_node(
    volume: Volume,
    name: str | None = None,
    labelmap: bool = False,
    context: SlicerContext | None = None,
    show: bool = True,
) -> Any:
    """Add ``volume`` to the scene as a scalar (or label map) volume node and return the node.

    Args:
        volume: the image; its voxels are copied.
        name: node name (default: the volume's modality, else "Volume").
        labelmap: create a ``vtkMRMLLabelMapVolumeNode`` (integer voxels, colour-table display).
        show: create the default display node (grey, automatic window/level for scalar volumes).
    """
    scene = resolve(context).scene
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    array = volume.array
    if array.ndim != 3:
        raise CSpineInputError(volume.source or volume.modality, f"a 3-D image is required, got shape {array.shape}")
    if labelmap and not np.issubdtype(array.dtype, np.integer):
        if not np.allclose(array, np.round(array)):
            raise CSpineInputError(volume.source or volume.modality, "a label map must hold whole numbers")
        array = np.round(array).astype(np.int16)
    node = scene.AddNewNodeByClass(class_name, name or volume.modality or "Volume")
    node.SetAndObserveImageData(image_data_from_array(array))
    set_node_geometry(node, volume)
    if show:
        node.CreateDefaultDisplayNodes()
    return node


def node_geometry(node: Any) -> tuple[tuple[float, float, float], tuple[float, float, float], np.ndarray]:
    """Spacing (i, j, k) mm, LPS origin and LPS direction (columns = i, j, k) of a volume or grid node's IJK->RAS."""
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    ijk_to_ras = vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    ijk_to_lps = LPS_TO_RAS_4 @ _numpy_matrix(ijk_to_ras)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    direction = ijk_to_lps[:3, :3] / spacing
    return tuple(spacing), tuple(ijk_to_lps[:3, 3]), direction


def node_to_volume(node: Any, modality: str = "", source: str | None = None) -> Volume:
    """A :class:`Volume` copy of a volume node's voxels and geometry.

    The node's own (local) geometry is returned; a node under a parent transform is refused, because its voxels would
    not be where the viewer shows them: harden the transform first (:func:`cspineai.scene.transforms.harden`).
    """
    name = source or node.GetName() or "volume node"
    if node.GetImageData() is None or node.GetImageData().GetPointData().GetScalars() is None:
        raise CSpineInputError(name, "the volume node holds no voxels")
    if node.GetParentTransformNode() is not None:
        raise CSpineInputError(name, "the volume is under a transform; harden it before reading its voxels")
    image = node.GetImageData()
    if image.GetPointData().GetScalars().GetNumberOfComponents() != 1:
        raise CSpineInputError(name, "expected a scalar volume, found a vector volume")
    if not np.allclose(image.GetSpacing(), 1.0) or not np.allclose(image.GetOrigin(), 0.0):
        # Slicer keeps geometry on the node; image data with its own spacing/origin would be applied twice.
        raise CSpineInputError(name, "the volume's image data carries its own spacing or origin (not a Slicer node?)")
    spacing, origin, direction = node_geometry(node)
    return Volume(array_from_image_data(image), spacing, origin, direction, modality=modality, source=name)


def update_node_from_volume(node: Any, volume: Volume) -> Any:
    """Replace a volume node's voxels and geometry by ``volume``'s (display settings are kept)."""
    node.SetAndObserveImageData(image_data_from_array(volume.array))
    set_node_geometry(node, volume)
    return node


def read_volume_node(
    path: str | os.PathLike, name: str | None = None, labelmap: bool = False, context: SlicerContext | None = None
) -> Any:
    """Read an image file with Slicer's own reader (``vtkMRMLVolumeArchetypeStorageNode``) into a new node.

    The project reads files with :func:`cspineai.io.read_volume`; this reader exists to check that both agree and to
    load files exactly as the desktop application does.
    """
    path = Path(path)
    if not path.is_file():
        raise CSpineInputError(path, "file not found")
    scene = resolve(context).scene
    # Not the file name by default: file names of clinical data often carry patient names or IDs.
    node_name = name or ("Label map" if labelmap else "Volume")
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", node_name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise CSpineInputError(path, "Slicer's volume reader could not read the file")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    return node
