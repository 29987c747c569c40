"""Label map ``Volume`` <-> ``vtkMRMLSegmentationNode``, named, coloured and coded from :data:`cspineai.series.LABELS`.

Import goes through a label map volume node whose colour table names every label value, so each segment gets its name,
colour and label value in one step (Slicer's ``ImportLabelmapToSegmentationNode``); standard terminology is then added
per segment. Export uses ``ExportSegmentsToLabelmapNode`` with the same colour table so that every segment keeps its
project label value (the "export all" variant renumbers segments 1..N).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import CSpineInputError
from ..series import LABELS
from ..volume import Volume
from .app import SlicerContext, resolve
from .terminology import Terminology, terminology_for_label
from .volumes import node_to_volume, volume_to_node

LABEL_TABLE_NAME = "CSpineAI labels"


@dataclasses.dataclass(frozen=True)
class SegmentInfo:
    """What a segment carries: id, name, display colour (RGB 0..1), label value and terminology."""

    segment_id: str
    name: str
    color: tuple[float, float, float]
    label_value: int
    terminology: Terminology | None


def label_color_table_node(context: SlicerContext | None = None) -> Any:
    """The scene's colour table naming every value of :data:`cspineai.series.LABELS` (created once per scene)."""
    scene = resolve(context).scene
    node = scene.GetFirstNodeByName(LABEL_TABLE_NAME)
    if node is not None and node.IsA("vtkMRMLColorTableNode"):
        return node
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", LABEL_TABLE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(max(label.value for label in LABELS) + 1)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for label in LABELS:
        node.SetColor(label.value, label.name, *label.color, 1.0)
    return node


def _check_label_values(labels: Volume) -> np.ndarray:
    array = labels.array
    if not np.issubdtype(array.dtype, np.integer):
        if not np.allclose(array, np.round(array)):
            raise CSpineInputError(labels.source or labels.modality, "a label map must hold whole numbers")
        array = np.round(array).astype(np.int16)
    values = np.unique(array)
    unknown = sorted(set(values.tolist()) - {0} - {label.value for label in LABELS})
    if unknown:
        raise CSpineInputError(
            labels.source or labels.modality,
            f"label values {unknown} are not project labels (1..{max(label.value for label in LABELS)}, see "
            "cspineai.series.LABELS)",
        )
    return array


def labelmap_to_segmentation_node(
    labels: Volume,
    name: str = "Segmentation",
    reference_node: Any = None,
    context: SlicerContext | None = None,
) -> Any:
    """Add a segmentation node with one segment per label value present in ``labels``.

    Args:
        labels: label map (values from :data:`cspineai.series.LABELS`; 0 is background).
        name: node name.
        reference_node: the source image's volume node; its geometry becomes the segmentation's reference geometry
            (needed for DICOM SEG export and for display at the image's resolution). Default: the label map's grid.

    Segments are named and coloured from ``LABELS`` and carry standard terminology (:mod:`.terminology`).
    """
    context = resolve(context)
    scene = context.scene
    array = _check_label_values(labels)
    labelmap_node = volume_to_node(labels.with_array(array), "__cspineai_import__", labelmap=True, context=context)
    try:
        labelmap_node.GetDisplayNode().SetAndObserveColorNodeID(label_color_table_node(context).GetID())
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation_node.CreateDefaultDisplayNodes()
        geometry_source = reference_node if reference_node is not None else labelmap_node
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(geometry_source)
        if not context.logic("segmentations").ImportLabelmapToSegmentationNode(labelmap_node, segmentation_node, ""):
            scene.RemoveNode(segmentation_node)
            raise CSpineInputError(labels.source or name, "Slicer could not import the label map as a segmentation")
    finally:
        scene.RemoveNode(labelmap_node)
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        terminology = terminology_for_label(segment.GetLabelValue())
        if terminology is not None:
            segment.SetTerminology(terminology.serialize())
    return segmentation_node


def segment_infos(segmentation_node: Any) -> list[SegmentInfo]:
    """Name, colour, label value and terminology of every segment, in the segmentation's order."""
    segmentation = segmentation_node.GetSegmentation()
    infos = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        infos.append(
            SegmentInfo(
                segment_id=segmentation.GetNthSegmentID(index),
                name=segment.GetName(),
                color=tuple(float(c) for c in segment.GetColor()),
                label_value=int(segment.GetLabelValue()),
                terminology=Terminology.parse(segment.GetTerminology()) if segment.HasTerminology() else None,
            )
        )
    return infos


def segmentation_node_to_labelmap(
    segmentation_node: Any, reference: Any = None, context: SlicerContext | None = None
) -> Volume:
    """Export all segments to a label map ``Volume`` that keeps the project's label values.

    Args:
        segmentation_node: the segmentation.
        reference: volume node (or :class:`Volume`) whose grid the label map is made on; default: the segmentation's
            reference geometry.

    Segments are matched to values by name through the project colour table; a segment whose name is not a project
    label is refused (renaming a segment in the GUI would otherwise silently change its value).
    """
    from vtkmodules.vtkCommonCore import vtkStringArray

    context = resolve(context)
    scene = context.scene
    if segmentation_node.GetScene() is not scene:
        raise ValueError("the segmentation node belongs to another scene: pass that scene's context")
    known = {label.name for label in LABELS}
    names = [info.name for info in segment_infos(segmentation_node)]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CSpineInputError(
            segmentation_node.GetName(), f"segments {unknown} are not project labels; rename them to a cspineai label"
        )
    temporary = []
    if isinstance(reference, Volume):
        reference = volume_to_node(reference, "__cspineai_reference__", context=context, show=False)
        temporary.append(reference)
    output = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__cspineai_export__")
    temporary.append(output)
    try:
        segment_ids = vtkStringArray()
        segmentation_node.GetSegmentation().GetSegmentIDs(segment_ids)
        import slicer

        extent_mode = slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        ok = context.logic("segmentations").ExportSegmentsToLabelmapNode(
            segmentation_node, segment_ids, output, reference, extent_mode, label_color_table_node(context)
        )
        if not ok:
            raise CSpineInputError(segmentation_node.GetName(), "Slicer could not export the segmentation")
        volume = node_to_volume(output, source=segmentation_node.GetName())
    finally:
        for node in temporary:
            scene.RemoveNode(node)
    volume.source = segmentation_node.GetName()
    return volume


def segmentation_to_labelmap_node(
    segmentation_node: Any, reference_node: Any = None, name: str | None = None, context: SlicerContext | None = None
) -> Any:
    """A label map volume node (project values, project colour table) made from a segmentation node."""
    context = resolve(context)
    volume = segmentation_node_to_labelmap(segmentation_node, reference_node, context)
    node = volume_to_node(volume, name or f"{segmentation_node.GetName()} labels", labelmap=True, context=context)
    node.GetDisplayNode().SetAndObserveColorNodeID(label_color_table_node(context).GetID())
    return node
