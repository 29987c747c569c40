"""A whole case as one Slicer scene: series, label segmentations, CT->MRI displacement, heatmaps, a label table.

:func:`write_case_scene` is what ``cspineai demo`` and the batch tools use to hand a case to a radiologist: one ``.mrb``
that desktop Slicer opens with everything in place (CT shown aligned to the MRI through the grid transform, segments
named and coded, heatmaps in a perceptual colour map) and a PNG of the slice views for a quick look without Slicer.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_directory
from ..errors import CSpineInputError
from ..geometry import require_same_grid
from ..series import CT_SERIES, LABELS, MRI_SERIES, SERIES
from ..volume import Volume
from .app import SlicerContext, create_context, resolve
from .bundle import load_bundle, save_bundle
from .heatmap import heatmap_to_node, show_in_slice_views
from .render import render_views_png
from .segmentations import labelmap_to_segmentation_node, segmentation_to_labelmap_node
from .tables import Column, rows_to_table_node
from .transforms import apply_transform, displacement_to_transform_node
from .volumes import volume_to_node

BUNDLE_NAME = "case.mrb"
VIEWS_NAME = "views.png"
TRANSFORM_NAME = "CT to MRI displacement"
LABEL_TABLE_NAME = "Label volumes"
LABEL_TABLE_COLUMNS = (
    Column("series", "string", "", "image series the label map belongs to"),
    Column("label", "int", "", "label value (cspineai.series.LABELS)"),
    Column("structure", "string", "", "structure name"),
    Column("voxels", "int", "", "number of voxels with this label"),
    Column("volume", "double", "mL", "voxel count times voxel volume"),
)


@dataclasses.dataclass(frozen=True)
class CaseScene:
    """Paths written by :func:`write_case_scene` and the scene they came from."""

    bundle: Path
    views: Path
    context: SlicerContext


def label_volume_rows(series_name: str, labels: Volume) -> list[dict]:
    """One row per label present: series, label value, structure name, voxel count and volume in mL."""
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    values, counts = np.unique(np.asarray(labels.array), return_counts=True)
    names = {label.value: label.name for label in LABELS}
    return [
        {
            "series": series_name,
            "label": int(v),
            "structure": names.get(int(v), f"label {int(v)}"),
            "voxels": int(n),
            "volume": round(int(n) * voxel_ml, 4),
        }
        for v, n in zip(values, counts, strict=True)
        if v != 0
    ]


def _check_inputs(series, labels, displacement, reference_series, heatmaps) -> None:
    if not series:
        raise CSpineInputError("case", "no image series given")
    unknown = sorted(set(series) - set(SERIES))
    if unknown:
        raise CSpineInputError("case", f"unknown series {unknown}; expected names from {list(SERIES)}")
    for name, volume in {**labels, **heatmaps}.items():
        if name not in series:
            raise CSpineInputError(name, "a label map or heatmap is given for a series that is not in the case")
        require_same_grid(series[name], volume, f"{name} and its label map/heatmap")
    if displacement is not None:
        if reference_series not in series:
            raise CSpineInputError(reference_series, "the displacement field's reference series is not in the case")
        expected = (*series[reference_series].shape, 3)
        if np.shape(displacement) != expected:
            raise CSpineInputError(
                "displacement field",
                f"shape {np.shape(displacement)} does not match {reference_series} grid {expected}",
            )


def build_case_scene(
    series: Mapping[str, Volume],
    labels: Mapping[str, Volume] | None = None,
    displacement: np.ndarray | None = None,
    reference_series: str = "T1_sag",
    heatmaps: Mapping[str, Volume] | None = None,
    context: SlicerContext | None = None,
) -> tuple[SlicerContext, dict[str, Any]]:
    """Add a case to a scene (default: a fresh one) and return the context and the nodes by role.

    Args:
        series: image per series name (``cspineai.series.SERIES``).
        labels: label map per series name, on that series' grid.
        displacement: ``(K, J, I, 3)`` LPS mm on ``reference_series``' grid; MRI point x maps to CT point x + d(x).
            The CT series (and their segmentations) are placed under it, so they display aligned with the MRI.
        heatmaps: saliency in [0, 1] per series name, on that series' grid.

    Node roles in the returned dict: ``"<series>"``, ``"<series> segmentation"``, ``"<series> heatmap"``,
    ``"transform"``, ``"label table"``.
    """
    labels = dict(labels or {})
    heatmaps = dict(heatmaps or {})
    _check_inputs(series, labels, displacement, reference_series, heatmaps)
    context = context if context is not None else create_context()
    nodes: dict[str, Any] = {}
    for name, volume in series.items():
        nodes[name] = volume_to_node(volume, name, context=context)
    for name, label_map in labels.items():
        nodes[f"{name} segmentation"] = labelmap_to_segmentation_node(
            label_map, f"{name} segmentation", reference_node=nodes[name], context=context
        )
    for name, heatmap in heatmaps.items():
        nodes[f"{name} heatmap"] = heatmap_to_node(heatmap, f"{name} heatmap", context=context)
    if displacement is not None:
        transform = displacement_to_transform_node(
            displacement, series[reference_series], TRANSFORM_NAME, space="LPS", context=context
        )
        nodes["transform"] = transform
        for name in CT_SERIES:
            for role in (name, f"{name} segmentation", f"{name} heatmap"):
                if role in nodes:
                    apply_transform(nodes[role], transform, context=context)
    rows = [row for name, label_map in labels.items() for row in label_volume_rows(name, label_map)]
    nodes["label table"] = rows_to_table_node(rows, LABEL_TABLE_NAME, LABEL_TABLE_COLUMNS, context=context)
    return context, nodes


def write_case_scene(
    series: Mapping[str, Volume],
    labels: Mapping[str, Volume] | None,
    out_dir: str | os.PathLike,
    displacement: np.ndarray | None = None,
    reference_series: str = "T1_sag",
    heatmaps: Mapping[str, Volume] | None = None,
    overwrite: bool = False,
    view_size: int = 384,
) -> CaseScene:
    """Write a case as ``out_dir/case.mrb`` plus ``out_dir/views.png`` (slice views of ``reference_series``).

    The folder appears complete or not at all; an existing folder is refused unless ``overwrite``. See
    :func:`build_case_scene` for the arguments. The picture shows ``reference_series`` (or the first series) with its
    heatmap blended on top and its labels as outlines.
    """
    out_dir = Path(out_dir).absolute()
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        context, nodes = build_case_scene(series, labels, displacement, reference_series, heatmaps)
        shown = reference_series if reference_series in series else next(iter(series))
        label_node = None
        if f"{shown} segmentation" in nodes:
            label_node = segmentation_to_labelmap_node(
                nodes[f"{shown} segmentation"], nodes[shown], f"{shown} labels", context=context
            )
        heatmap_node = nodes.get(f"{shown} heatmap")
        render_views_png(tmp / VIEWS_NAME, nodes[shown], heatmap_node, label_node, size=view_size, context=context)
        if label_node is not None:
            # The segmentation holds the same labels; the label map node served only the picture.
            context.scene.RemoveNode(label_node)
        show_in_slice_views(background=nodes[shown], foreground=heatmap_node, context=context)
        save_bundle(tmp / BUNDLE_NAME, context)
    return CaseScene(out_dir / BUNDLE_NAME, out_dir / VIEWS_NAME, context)


def load_case_bundle(results_dir: str | os.PathLike, context: SlicerContext | None = None) -> dict[str, Any]:
    """Load a case folder written by :func:`write_case_scene` into the scene and return its series nodes by role.

    :func:`cspineai.scene.results.load_results` builds on this and adds the roles only a finished case has.

    Args:
        results_dir: folder holding ``case.mrb``.
        context: scene to load into (default: the application's scene inside Slicer, else the default one).

    Roles are those of :func:`build_case_scene` (``"T1_sag"``, ``"CT_bone segmentation"``, ``"transform"``,
    ``"label table"``...) plus ``"mri"`` and ``"ct"`` for the first MRI and CT series present. Only nodes added by this
    load are returned, so loading a second case beside a first one returns the second case's nodes. The slice views
    show the MRI (with its heatmap, if any).
    """
    context = resolve(context)
    bundle = Path(results_dir) / BUNDLE_NAME
    if not bundle.is_file():
        raise CSpineInputError(results_dir, f"no {BUNDLE_NAME} in this folder (is it a CSpineAI results folder?)")
    scene = context.scene
    before = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    load_bundle(bundle, context)
    known_roles = set(SERIES)
    known_roles |= {f"{name} segmentation" for name in SERIES} | {f"{name} heatmap" for name in SERIES}
    nodes: dict[str, Any] = {}
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.GetID() in before:
            continue
        name = node.GetName()
        if name in known_roles and (node.IsA("vtkMRMLVolumeNode") or node.IsA("vtkMRMLSegmentationNode")):
            nodes[name] = node
        elif name == TRANSFORM_NAME and node.IsA("vtkMRMLTransformNode"):
            nodes["transform"] = node
        elif name == LABEL_TABLE_NAME and node.IsA("vtkMRMLTableNode"):
            nodes["label table"] = node
    for alias, candidates in (("mri", MRI_SERIES), ("ct", CT_SERIES)):
        present = [name for name in candidates if name in nodes]
        if present:
            nodes[alias] = nodes[present[0]]
    if "mri" in nodes:
        mri_name = next(name for name in MRI_SERIES if name in nodes)
        show_in_slice_views(background=nodes["mri"], foreground=nodes.get(f"{mri_name} heatmap"), context=context)
    return nodes
