"""A pipeline result (:class:`cspineai.pipeline.CaseResult`) as a Slicer scene, and back.

:func:`write_results_scene` adds to :func:`~cspineai.scene.case.build_case_scene` (series, CT under the registration
grid transform, segmentation with terminology, heatmaps with the Inferno colour table) what only a finished case has:
the cord morphometry tables (units in the column headers) and a CSA plot chart (``vtkMRMLPlotChartNode`` +
``vtkMRMLPlotSeriesNode`` reading the table), then saves ``case.mrb`` and ``views.png``.

:func:`load_results` loads such a folder and returns its nodes by the roles the module and the self-test use:
``ct``, ``mri``, ``transform``, ``heatmap``, ``segmentation``, ``morphometry``, ``plot`` (and every role of
:func:`~cspineai.scene.case.load_case_bundle`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..series import CT_SERIES, MRI_SERIES
from .app import SlicerContext, create_context, resolve
from .bundle import save_bundle
from .case import BUNDLE_NAME, VIEWS_NAME, build_case_scene, load_case_bundle
from .heatmap import show_in_slice_views
from .render import render_views_png
from .segmentations import segmentation_to_labelmap_node
from .tables import Column, rows_to_table_node

MORPHOMETRY_TABLE_NAME = "Cord morphometry"
MORPHOMETRY_LEVELS_TABLE_NAME = "Cord morphometry by level"
CSA_CHART_NAME = "Cord CSA"
CSA_SERIES_NAME = "CSA (angle-corrected)"
_INT_COLUMNS = ("slice", "slices", "components")
_STRING_COLUMNS = ("level",)


def morphometry_columns(spec: dict[str, tuple[str, str]]) -> list[Column]:
    """Typed columns with units from :data:`cspineai.morphometry.SLICE_COLUMNS` / ``LEVEL_COLUMNS``."""
    columns = []
    for name, (unit, description) in spec.items():
        kind = "string" if name in _STRING_COLUMNS else "int" if name in _INT_COLUMNS else "double"
        columns.append(Column(name, kind, unit, description))
    return columns


def csa_plot_chart(table_node: Any, context: SlicerContext | None = None) -> Any:
    """A plot chart of the table's ``csa_mm2`` against ``distance_from_top_mm`` (the Plots module shows it)."""
    scene = resolve(context).scene
    series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", CSA_SERIES_NAME)
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetXColumnName("distance_from_top_mm")
    series.SetYColumnName("csa_mm2")
    series.SetPlotType(series.PlotTypeScatter)
    series.SetMarkerStyle(series.MarkerStyleCircle)
    series.SetColor(0.9, 0.6, 0.1)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", CSA_CHART_NAME)
    chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle("Spinal cord cross-sectional area")
    chart.SetXAxisTitle("distance from the most superior cord slice (mm)")
    chart.SetYAxisTitle("CSA (mm2)")
    return chart


def add_morphometry(morphometry: Any, context: SlicerContext | None = None) -> dict[str, Any]:
    """Table nodes of the per-slice and per-level morphometry and the CSA chart; returns them by role."""
    from ..morphometry import LEVEL_COLUMNS, SLICE_COLUMNS

    nodes = {
        "morphometry": rows_to_table_node(
            morphometry.slices, MORPHOMETRY_TABLE_NAME, morphometry_columns(SLICE_COLUMNS), context
        )
    }
    if morphometry.levels:
        nodes["morphometry levels"] = rows_to_table_node(
            morphometry.levels, MORPHOMETRY_LEVELS_TABLE_NAME, morphometry_columns(LEVEL_COLUMNS), context
        )
    nodes["plot"] = csa_plot_chart(nodes["morphometry"], context)
    return nodes


def _reference_series(result: Any) -> str:
    """The MRI the case is shown on: the registration's fixed series, else the segmented one, else any MRI."""
    if result.registration is not None:
        return result.plan["register"][1]
    if result.segmentation_series is not None:
        return result.segmentation_series
    present = [name for name in MRI_SERIES if name in result.series]
    return present[0] if present else next(iter(result.series))


def write_results_scene(result: Any, folder: str | os.PathLike, view_size: int = 384) -> dict[str, Path]:
    """Write ``case.mrb`` and ``views.png`` of a pipeline result into ``folder`` (already private to the caller).

    Returns ``{"case.mrb": path, "views.png": path}``. The slice views show the reference MRI with its heatmap as the
    foreground layer (or the other branch's heatmap when the MRI has none) and the segmentation as outlines.
    """
    folder = Path(folder)
    reference = _reference_series(result)
    labels = {result.segmentation_series: result.segmentation} if result.segmentation is not None else {}
    displacement = result.registration.displacement_lps if result.registration is not None else None
    context = create_context()
    context, nodes = build_case_scene(
        result.series, labels, displacement, reference, dict(result.saliency), context=context
    )
    if result.morphometry is not None:
        nodes.update(add_morphometry(result.morphometry, context))
    heatmap = nodes.get(f"{reference} heatmap")
    label_node = None
    if labels:
        label_node = segmentation_to_labelmap_node(
            nodes[f"{result.segmentation_series} segmentation"], nodes[reference], "labels", context=context
        )
    views = render_views_png(folder / VIEWS_NAME, nodes[reference], heatmap, label_node, size=view_size,
                             context=context)
    if label_node is not None:
        context.scene.RemoveNode(label_node)  # it only served the picture: the segmentation holds the same labels
    show_in_slice_views(background=nodes[reference], foreground=heatmap, context=context)
    bundle = save_bundle(folder / BUNDLE_NAME, context)
    return {BUNDLE_NAME: bundle, VIEWS_NAME: views}


def load_results(results_dir: str | os.PathLike, context: SlicerContext | None = None) -> dict[str, Any]:
    """Load a results folder (its ``case.mrb``) and return the nodes by role.

    Roles of :func:`~cspineai.scene.case.load_case_bundle` plus ``heatmap`` (the MRI's heatmap, else the CT's),
    ``segmentation`` (the first segmentation), ``morphometry`` / ``morphometry levels`` (tables) and ``plot`` (chart).
    Only nodes added by this load are considered.
    """
    context = resolve(context)
    scene = context.scene
    before = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    nodes = dict(load_case_bundle(results_dir, context=context))
    for name in (*MRI_SERIES, *CT_SERIES):
        if "heatmap" not in nodes and f"{name} heatmap" in nodes:
            nodes["heatmap"] = nodes[f"{name} heatmap"]
        if "segmentation" not in nodes and f"{name} segmentation" in nodes:
            nodes["segmentation"] = nodes[f"{name} segmentation"]
    wanted = {
        MORPHOMETRY_TABLE_NAME: ("morphometry", "vtkMRMLTableNode"),
        MORPHOMETRY_LEVELS_TABLE_NAME: ("morphometry levels", "vtkMRMLTableNode"),
        CSA_CHART_NAME: ("plot", "vtkMRMLPlotChartNode"),
    }
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        role = wanted.get(node.GetName())
        if node.GetID() not in before and role is not None and node.IsA(role[1]):
            nodes[role[0]] = node
    return nodes


__all__ = [
    "CSA_CHART_NAME",
    "MORPHOMETRY_LEVELS_TABLE_NAME",
    "MORPHOMETRY_TABLE_NAME",
    "add_morphometry",
    "csa_plot_chart",
    "load_results",
    "morphometry_columns",
    "write_results_scene",
]
