"""Assertions on the scene nodes CSpineAI creates, shared by Slicer's self-test and pytest.

The same functions run in two places: ``CSpineAITest`` in the desktop application (its scene, through
:func:`cspineai.scene.get_context`) and the pytest suite against ``slicer-core`` (a context from
:func:`cspineai.scene.create_context`). Nodes are built and read back only through the scene layer
(:mod:`cspineai.scene`), so the self-test checks the very code the module uses, not a private copy of it.

Two levels:
  - :func:`run_scene_self_test` checks what the module relies on in any Slicer: a volume file loads with its geometry,
    a label map imported as a segmentation reads back voxel for voxel, and the morphometry of the segment read back
    from the scene (:func:`cspineai.morphometry.measure_cord`), put in a table node, gives the known area of a
    synthetic cylinder (an analytic reference: a grid or unit mix-up between the scene and the numbers shows as a
    wrong area).
  - :func:`run_pipeline_self_test` runs the bundled synthetic case through the whole pipeline in this process, loads
    its results folder into the scene and checks the case's nodes with :func:`check_case_nodes` (CT under the
    registration transform, heatmap in [0, 1] with a colour table, non-empty cord segment with terminology and a
    plausible CSA). Where the shipped models are not installed it raises :class:`SelfTestUnavailable`: a skipped
    test, never a passing one.

Every check raises :class:`SelfTestFailure` (an AssertionError) whose message names the node and what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CSpineInputError
from ..series import LABEL_BY_NAME
from .app import SlicerContext, resolve

#: Plausible spinal cord cross-sectional area (mm^2): healthy adults 60-90 mm^2 at C2-C5, severe compression ~30-40.
#: The range is wide on purpose: it catches unit and scale errors (voxels instead of mm^2, cm^2), not disease.
CORD_CSA_RANGE_MM2 = (20.0, 150.0)
#: Roles of the nodes a finished case puts in the scene (:func:`cspineai.scene.load_results`).
CASE_NODE_ROLES = ("ct", "transform", "heatmap", "segmentation", "morphometry")
CORD_SEGMENT_NAME = "spinal cord"
CSA_COLUMN = "csa_mm2"


class SelfTestFailure(AssertionError):
    """A node is missing or does not hold what the module promises."""


class SelfTestUnavailable(RuntimeError):
    """This part of the self-test cannot run here (component or models absent); the message says what is missing."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SelfTestFailure(message)


def _name(node) -> str:
    return repr(node.GetName()) if node is not None and hasattr(node, "GetName") else "(none)"


def _voxels(node) -> np.ndarray:
    """The node's voxels ``[k, j, i]`` (a copy), through the scene layer."""
    from .volumes import array_from_image_data

    _require(node is not None and node.GetImageData() is not None, f"volume {_name(node)} has no image data")
    _require(node.GetImageData().GetPointData().GetScalars() is not None, f"volume {_name(node)} has no voxels")
    return array_from_image_data(node.GetImageData())


def _context_of(node, context: SlicerContext | None) -> SlicerContext:
    """``context``, else one over the node's own scene. Exporting segments needs only the Segmentations logic's
    static methods, so a bare instance serves for a scene made without the application."""
    if context is not None:
        return context
    from .app import in_desktop_slicer

    if in_desktop_slicer():
        return resolve(None)
    import slicer

    return SlicerContext(node.GetScene(), logics={"segmentations": slicer.vtkSlicerSegmentationsModuleLogic()})


# ---- checks ---------------------------------------------------------------------------------------------------------


def check_volume_matches(node, volume, atol: float = 1e-3) -> None:
    """The node holds ``volume`` (a :class:`cspineai.Volume`): same voxels and same LPS geometry."""
    from .volumes import node_geometry

    array = _voxels(node)
    _require(array.shape == volume.shape, f"volume {_name(node)} has shape {array.shape}, expected {volume.shape}")
    spacing, origin, direction = node_geometry(node)
    same = (
        np.allclose(spacing, volume.spacing, atol=atol)
        and np.allclose(origin, volume.origin, atol=atol)
        and np.allclose(direction, volume.direction, atol=atol)
    )
    _require(same, f"volume {_name(node)} geometry differs from its file: spacing {np.round(spacing, 4)}, origin "
                   f"{np.round(origin, 3)} (expected {volume.spacing}, {volume.origin})")
    _require(np.allclose(array, volume.array, atol=atol), f"volume {_name(node)} voxels differ from its file")


def segment_mask(segmentation_node, segment_name: str = CORD_SEGMENT_NAME, context: SlicerContext | None = None):
    """``(mask [k, j, i], label Volume)``: the segment's voxels on the segmentation's reference grid, exported by
    :func:`cspineai.scene.segmentation_node_to_labelmap` (project label values)."""
    from .segmentations import segment_infos, segmentation_node_to_labelmap

    _require(segmentation_node is not None, "no segmentation node")
    names = [info.name for info in segment_infos(segmentation_node)]
    _require(segment_name in names, f"segmentation {_name(segmentation_node)} has no segment named {segment_name!r}")
    try:
        labels = segmentation_node_to_labelmap(segmentation_node, context=_context_of(segmentation_node, context))
    except CSpineInputError:
        # Slicer exports nothing at all (not a zero image) when every segment is empty.
        return np.zeros((0, 0, 0), dtype=bool), None
    return np.asarray(labels.array) == LABEL_BY_NAME[segment_name].value, labels


def check_segment(
    segmentation_node,
    segment_name: str = CORD_SEGMENT_NAME,
    min_voxels: int = 1,
    require_terminology: bool = False,
    context: SlicerContext | None = None,
) -> int:
    """The segment exists, has at least ``min_voxels`` voxels (and a standard terminology); returns the count."""
    from .segmentations import segment_infos

    mask, _ = segment_mask(segmentation_node, segment_name, context)
    count = int(mask.sum())
    _require(count >= min_voxels, f"segment {segment_name!r} has {count} voxels, expected at least {min_voxels}")
    if require_terminology:
        info = next(i for i in segment_infos(segmentation_node) if i.name == segment_name)
        _require(info.terminology is not None, f"segment {segment_name!r} carries no terminology (SNOMED CT code)")
    return count


def check_table(table_node, required_columns: Sequence[str], min_rows: int = 1) -> dict[str, np.ndarray]:
    """The table has the columns and at least ``min_rows`` rows; returns its columns (numpy arrays)."""
    from .tables import table_node_to_columns

    _require(table_node is not None and table_node.GetTable() is not None, f"table {_name(table_node)} is empty")
    columns = table_node_to_columns(table_node)
    missing = [name for name in required_columns if name not in columns]
    _require(not missing, f"table {_name(table_node)} lacks columns {missing} (has {sorted(columns)})")
    rows = table_node.GetTable().GetNumberOfRows()
    _require(rows >= min_rows, f"table {_name(table_node)} has {rows} rows, expected at least {min_rows}")
    return columns


def check_cord_csa(
    table_node, column: str = CSA_COLUMN, plausible_mm2: tuple[float, float] = CORD_CSA_RANGE_MM2
) -> float:
    """Every finite CSA value of the morphometry table is plausible for a human cord; returns their median (mm^2)."""
    values = np.asarray(check_table(table_node, [column])[column], dtype=float)
    finite = values[np.isfinite(values)]
    _require(finite.size > 0, f"table {_name(table_node)} has no finite {column!r} value")
    low, high = plausible_mm2
    outside = finite[(finite < low) | (finite > high)]
    _require(
        outside.size == 0,
        f"cord CSA values {np.round(outside, 1).tolist()} mm^2 lie outside the plausible {low:g}-{high:g} mm^2",
    )
    return float(np.median(finite))


def check_heatmap(node) -> tuple[float, float]:
    """A saliency heatmap: finite, within [0, 1], not all zero, shown through a colour table; returns (min, max)."""
    array = _voxels(node).astype(float)
    _require(array.size > 0 and bool(np.isfinite(array).all()), f"heatmap {_name(node)} has non-finite values")
    low, high = float(array.min()), float(array.max())
    _require(low >= -1e-6 and high <= 1 + 1e-6, f"heatmap {_name(node)} spans [{low:.3g}, {high:.3g}], not [0, 1]")
    _require(high > 0, f"heatmap {_name(node)} is zero everywhere")
    display = node.GetDisplayNode()
    if display is not None:  # a node loaded without display nodes is legal; a shown one must have its colour map
        _require(display.GetColorNode() is not None, f"heatmap {_name(node)} is displayed without a colour table")
    return low, high


def check_transform(volume_node, max_displacement_mm: float = 50.0) -> object:
    """The volume is under a transform that maps its centre to a finite point within ``max_displacement_mm``."""
    transform_node = volume_node.GetParentTransformNode() if volume_node is not None else None
    _require(transform_node is not None, f"volume {_name(volume_node)} is not under a transform")
    transform = transform_node.GetTransformToParent()
    _require(transform is not None, f"transform {_name(transform_node)} holds no transform")
    bounds = [0.0] * 6
    volume_node.GetRASBounds(bounds)
    centre = [(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)]
    moved = transform.TransformPoint(centre)
    shift = math.dist(centre, moved)
    _require(
        all(math.isfinite(v) for v in moved) and shift <= max_displacement_mm,
        f"transform {_name(transform_node)} moves the centre of {_name(volume_node)} by {shift:.1f} mm "
        f"(more than {max_displacement_mm:g} mm or not finite)",
    )
    return transform_node


def check_case_nodes(nodes: Mapping[str, object], context: SlicerContext | None = None) -> dict:
    """All assertions on a finished case's nodes (by role, as :func:`cspineai.scene.load_results`
    returns them)."""
    missing = [role for role in CASE_NODE_ROLES if nodes.get(role) is None]
    _require(not missing, f"the case put no {missing} node(s) in the scene")
    _require(
        nodes["ct"].GetParentTransformNode() is nodes["transform"],
        "the CT is not under the registration transform",
    )
    check_transform(nodes["ct"])
    heatmap_range = check_heatmap(nodes["heatmap"])
    cord_voxels = check_segment(nodes["segmentation"], CORD_SEGMENT_NAME, require_terminology=True, context=context)
    median_csa = check_cord_csa(nodes["morphometry"])
    return {"heatmap_range": heatmap_range, "cord_voxels": cord_voxels, "median_csa_mm2": median_csa}


# ---- the two self-tests ----------------------------------------------------------------------------------------------


def synthetic_cord_volume(radius_mm: float = 4.0, spacing=(0.5, 0.5, 2.0), shape_kji=(12, 48, 48)):
    """A small axial T2-like volume with a straight cylindrical cord of ``radius_mm`` along k, and its mask.

    The analytic reference of :func:`run_scene_self_test`: its CSA is pi * radius^2 whatever code measures it.
    """
    from ..volume import Volume

    k, j, i = np.indices(shape_kji, dtype=float)
    centre = (np.array(shape_kji[1:]) - 1) / 2
    inside = ((j - centre[0]) * spacing[1]) ** 2 + ((i - centre[1]) * spacing[0]) ** 2 <= radius_mm**2
    rng = np.random.default_rng(7)
    image = np.where(inside, 300.0, 1000.0) + rng.normal(0, 20, shape_kji)  # dark cord in bright CSF, as on T2
    volume = Volume(image.astype(np.float32), spacing=spacing, origin=(-12.0, 30.0, -10.0), modality="T2_tra")
    return volume, inside


def run_scene_self_test(context: SlicerContext, work_dir: str | Path, radius_mm: float = 4.0) -> dict:
    """Load a synthetic cord volume, import its cord as a segmentation, measure the segment read back from the scene
    and put the morphometry in a table node, checking each read-back. Returns the measured figures."""
    from ..io import write_volume
    from ..morphometry import measure_cord
    from .results import add_morphometry
    from .segmentations import labelmap_to_segmentation_node
    from .volumes import read_volume_node

    volume, cord = synthetic_cord_volume(radius_mm)
    path = write_volume(volume, Path(work_dir) / "selftest_t2_tra.nrrd", compress=False)
    node = read_volume_node(path, "CSpineAI self-test T2_tra", context=context)
    check_volume_matches(node, volume)

    labels = volume.with_array(cord.astype(np.uint8) * LABEL_BY_NAME[CORD_SEGMENT_NAME].value, modality="labels")
    segmentation = labelmap_to_segmentation_node(labels, "CSpineAI self-test segmentation", node, context=context)
    voxels = check_segment(segmentation, CORD_SEGMENT_NAME, min_voxels=int(cord.sum()), require_terminology=True,
                           context=context)
    _require(voxels == int(cord.sum()), f"cord segment reads back {voxels} voxels, {int(cord.sum())} were written")

    _, read_back = segment_mask(segmentation, CORD_SEGMENT_NAME, context)
    table = add_morphometry(measure_cord(read_back), context)["morphometry"]
    median_csa = check_cord_csa(table)
    expected = math.pi * radius_mm**2
    _require(
        abs(median_csa - expected) <= 0.1 * expected,
        f"cord CSA {median_csa:.1f} mm^2 differs from the synthetic cylinder's {expected:.1f} mm^2 by more than 10%",
    )
    return {"cord_voxels": voxels, "median_csa_mm2": round(median_csa, 2), "expected_csa_mm2": round(expected, 2)}


def run_pipeline_self_test(
    context: SlicerContext,
    work_dir: str | Path,
    device: str = "cpu",
    models: Mapping[str, Any] | None = None,
) -> dict:
    """Run the bundled synthetic case (:func:`cspineai.pipeline.bundled_case`) through every step on ``device``, load
    the results folder into ``context``'s scene and check its nodes (:func:`check_case_nodes`).

    ``models`` default to the shipped ones (:data:`cspineai.pipeline.DEFAULT_MODEL_IDS`); while those are not
    installed this raises :class:`SelfTestUnavailable` naming the missing model.
    """
    from ..errors import CSpineModelError
    from ..pipeline import STEPS, bundled_case, resolve_models, run_to_folder
    from .results import load_results

    try:
        resolved = resolve_models(models, ("registration", "classifier", "segmentation"), device)
    except CSpineModelError as error:
        raise SelfTestUnavailable(f"the shipped models are not installed ({error})") from error
    case = bundled_case()
    out_dir = Path(work_dir) / "cspineai-selftest-results"
    result, _ = run_to_folder(case.series, out_dir, STEPS, resolved, device, overwrite=True)
    nodes = load_results(out_dir, context=context)
    report = check_case_nodes(nodes, context)
    _require(nodes.get("plot") is not None, "the case put no CSA plot chart in the scene")
    report["probability"] = round(float(result.prediction.probability), 4)
    report["seconds"] = result.timings["total"]
    return report


__all__ = [
    "CASE_NODE_ROLES",
    "CORD_CSA_RANGE_MM2",
    "CORD_SEGMENT_NAME",
    "CSA_COLUMN",
    "SelfTestFailure",
    "SelfTestUnavailable",
    "check_case_nodes",
    "check_cord_csa",
    "check_heatmap",
    "check_segment",
    "check_table",
    "check_transform",
    "check_volume_matches",
    "run_pipeline_self_test",
    "run_scene_self_test",
    "segment_mask",
    "synthetic_cord_volume",
]
