"""Slice-view pictures without a screen or OpenGL: background + heatmap foreground + label outline, to PNG.

Slicer's ``vtkMRMLSliceLogic`` composes a slice view's layers (reslicing, window/level, colour tables, label outlines)
entirely in VTK's image pipeline; only its display in a window needs OpenGL. Taking the pipeline's output image
therefore gives the exact picture the desktop application's slice view shows, on any machine, in a fraction of a
second.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import CSpineInputError
from .app import SlicerContext, resolve

#: Slice view name (as in desktop Slicer's layout) used for each orientation.
VIEW_OF_ORIENTATION = {"Axial": "Red", "Sagittal": "Yellow", "Coronal": "Green"}
# Inside desktop Slicer: off-screen slice logics per (scene, orientation), kept so that their nodes are made once.
_PRIVATE_SLICE_LOGICS: dict[tuple[int, str], Any] = {}


def _application_logic(context: SlicerContext) -> Any:
    if context.application_logic is not None:
        return context.application_logic
    import slicer

    return slicer.app.applicationLogic()


def slice_logic(orientation: str, context: SlicerContext | None = None) -> Any:
    """The slice logic of the view showing ``orientation`` ("Axial", "Sagittal", "Coronal"), created on first use.

    Outside Slicer these are the scene's Red/Yellow/Green views, so a saved scene opens with the layers set here.
    Inside desktop Slicer a private, never-displayed view per orientation is used instead: rendering a picture must
    not resize or re-layer the views the user is looking at.
    """
    import slicer

    context = resolve(context)
    if orientation not in VIEW_OF_ORIENTATION:
        raise ValueError(f"orientation must be one of {sorted(VIEW_OF_ORIENTATION)}, not {orientation!r}")
    app_logic = _application_logic(context)
    if context.desktop:
        key = (id(context.scene), orientation)
        logic = _PRIVATE_SLICE_LOGICS.get(key)
        if logic is None:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(app_logic)
            logic.SetMRMLScene(context.scene)
            logic.AddSliceNode(f"CSpineAI{orientation}")
            _PRIVATE_SLICE_LOGICS[key] = logic
    else:
        layout_name = VIEW_OF_ORIENTATION[orientation]
        logic = app_logic.GetSliceLogicByLayoutName(layout_name)
        if logic is None:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(app_logic)
            logic.SetMRMLScene(context.scene)
            logic.AddSliceNode(layout_name)
            app_logic.GetSliceLogics().AddItem(logic)
    logic.GetSliceNode().SetOrientation(orientation)
    return logic


def render_slice_array(
    orientation: str,
    background: Any,
    foreground: Any = None,
    label: Any = None,
    foreground_opacity: float = 0.5,
    label_outline: bool = True,
    size: int = 384,
    context: SlicerContext | None = None,
) -> np.ndarray:
    """Render one slice view through the centre of ``background`` and return it as ``(size, size, 3)`` uint8 RGB.

    Args:
        orientation: "Axial", "Sagittal" or "Coronal".
        background: scalar volume node (the anatomy).
        foreground: optional volume node blended on top (a heatmap from :mod:`.heatmap`).
        label: optional label map volume node, or a segmentation node (exported for the picture through the project
            colour table on the background's grid, then removed again).
        label_outline: draw labels as outlines (True) or filled (False).
    """
    if background is None:
        raise CSpineInputError("slice view", "a background volume is required to render a slice view")
    context = resolve(context)
    if label is not None and label.IsA("vtkMRMLSegmentationNode"):
        from .segmentations import segmentation_to_labelmap_node

        # The slice logic composes volume layers only; segmentations are drawn by a displayable manager (OpenGL).
        labelmap = segmentation_to_labelmap_node(label, background, "__cspineai_render_labels__", context=context)
        try:
            return render_slice_array(
                orientation, background, foreground, labelmap, foreground_opacity, label_outline, size, context
            )
        finally:
            context.scene.RemoveNode(labelmap)
    logic = slice_logic(orientation, context)
    slice_node = logic.GetSliceNode()
    composite = logic.GetSliceCompositeNode()
    slice_node.SetDimensions(size, size, 1)
    composite.SetBackgroundVolumeID(background.GetID())
    composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
    composite.SetForegroundOpacity(float(foreground_opacity) if foreground is not None else 0.0)
    composite.SetLabelVolumeID(label.GetID() if label is not None else None)
    composite.SetLabelOpacity(1.0)
    slice_node.SetUseLabelOutline(bool(label_outline))
    logic.FitSliceToBackground()
    logic.SnapSliceOffsetToIJK()
    # Take the connection after the layers are set: the slice logic rebuilds its blend pipeline when layers change.
    connection = logic.GetImageDataConnection()
    producer = connection.GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(connection.GetIndex())
    from vtkmodules.util.numpy_support import vtk_to_numpy

    width, height, _ = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    rgba = vtk_to_numpy(scalars).reshape(height, width, scalars.GetNumberOfComponents())
    # VTK's first row is the bottom of the picture.
    return np.ascontiguousarray(rgba[::-1, :, :3]).astype(np.uint8)


def write_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an ``(H, W, 3)`` uint8 RGB array as PNG, atomically."""
    from vtkmodules.vtkIOImage import vtkPNGWriter

    from .volumes import image_data_from_array

    array = np.asarray(array, dtype=np.uint8)
    # PNG rows run top to bottom, VTK image rows bottom to top: flip, and store as a one-slice RGB image.
    image = image_data_from_array(array[::-1][None], components=3)
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = vtkPNGWriter()
        writer.SetInputData(image)
        writer.SetFileName(str(tmp))
        writer.Write()
        if writer.GetErrorCode():
            raise OSError(f"{path}: the PNG could not be written (VTK error {writer.GetErrorCode()})")
    return path


def compose_views(views: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Tile equally tall ``(H, W, 3)`` views side by side with a black ``gap`` (pixels) between them."""
    if not views:
        raise ValueError("no views to compose")
    height = max(view.shape[0] for view in views)
    padded = []
    for index, view in enumerate(views):
        canvas = np.zeros((height, view.shape[1], 3), dtype=np.uint8)
        canvas[: view.shape[0]] = view
        padded.append(canvas)
        if index < len(views) - 1:
            padded.append(np.zeros((height, gap, 3), dtype=np.uint8))
    return np.concatenate(padded, axis=1)


def render_views_png(
    path: str | os.PathLike,
    background: Any,
    foreground: Any = None,
    label: Any = None,
    orientations: Sequence[str] = ("Axial", "Sagittal", "Coronal"),
    size: int = 384,
    label_outline: bool = True,
    foreground_opacity: float = 0.5,
    context: SlicerContext | None = None,
) -> Path:
    """Render the slice views of ``orientations`` through the centre of ``background`` into one PNG side by side."""
    context = resolve(context)
    views = [
        render_slice_array(orientation, background, foreground, label, foreground_opacity, label_outline, size, context)
        for orientation in orientations
    ]
    return write_png(compose_views(views), path)
