"""The assertions of Slicer's self-test (``CSpineAITest``), run here against slicer-core: they pass on good nodes and,
so that they cannot pass vacuously, fail on each kind of bad node. Nodes are built with the scene layer, as the module
builds them."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from cspineai.errors import CSpineInputError  # noqa: E402
from cspineai.scene import (  # noqa: E402
    columns_to_table_node,
    create_context,
    heatmap_to_node,
    labelmap_to_segmentation_node,
    read_volume_node,
    selftest,
    volume_to_node,
)
from cspineai.volume import Volume  # noqa: E402


@pytest.fixture
def context():
    """A fresh scene with the module logics, as the application has them."""
    return create_context()


@pytest.fixture
def volume_node(context, tmp_path):
    volume, cord = selftest.synthetic_cord_volume(radius_mm=3.0, shape_kji=(4, 24, 24))
    from cspineai.io import write_volume

    path = write_volume(volume, tmp_path / "t2.nrrd", compress=False)
    return read_volume_node(path, "t2", context=context), volume, cord


def _cord_segmentation(context, cord, node, volume):
    return labelmap_to_segmentation_node(volume.with_array(cord.astype(np.uint8)), "cord", node, context=context)


def _array_node(context, array: np.ndarray, name: str = "heatmap"):
    """A plain volume node (no colour table of its own choosing) holding ``array``."""
    return volume_to_node(Volume(np.asarray(array, dtype=np.float32)), name, context=context, show=False)


def _linear_transform(context, shift_mm: float):
    node = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, shift_mm)
    node.SetMatrixTransformToParent(matrix)
    return node


def test_scene_self_test_round_trips_volume_segment_and_table_with_the_cylinders_area(context, tmp_path):
    report = selftest.run_scene_self_test(context, tmp_path, radius_mm=4.0)
    assert report["expected_csa_mm2"] == pytest.approx(np.pi * 16, abs=0.01)
    assert abs(report["median_csa_mm2"] - report["expected_csa_mm2"]) <= 0.1 * report["expected_csa_mm2"]
    assert context.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 1


def test_volume_check_catches_a_geometry_that_differs_from_the_file(volume_node):
    node, volume, _ = volume_node
    selftest.check_volume_matches(node, volume)
    node.SetSpacing(1.0, 1.0, 1.0)
    with pytest.raises(selftest.SelfTestFailure, match="geometry differs"):
        selftest.check_volume_matches(node, volume)


def test_segment_check_reads_back_the_voxels_written_and_names_a_missing_segment(context, volume_node):
    node, volume, cord = volume_node
    segmentation = _cord_segmentation(context, cord, node, volume)
    assert selftest.check_segment(segmentation, "spinal cord", require_terminology=True) == int(cord.sum())
    with pytest.raises(selftest.SelfTestFailure, match="no segment named 'CSF'"):
        selftest.check_segment(segmentation, "CSF")
    with pytest.raises(selftest.SelfTestFailure, match="expected at least"):
        selftest.check_segment(segmentation, "spinal cord", min_voxels=int(cord.sum()) + 1)


def test_segment_check_fails_on_an_empty_cord(context, volume_node):
    node, _, _ = volume_node
    empty = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    empty.SetReferenceImageGeometryParameterFromVolumeNode(node)
    empty.GetSegmentation().AddEmptySegment("spinal cord", "spinal cord")
    with pytest.raises(selftest.SelfTestFailure, match="has 0 voxels"):
        selftest.check_segment(empty, "spinal cord", context=context)


def test_segment_check_requires_terminology_when_asked(context, volume_node):
    node, volume, cord = volume_node
    segmentation = _cord_segmentation(context, cord, node, volume)
    segment = segmentation.GetSegmentation().GetNthSegment(0)
    segment.SetTerminology("")
    with pytest.raises(selftest.SelfTestFailure, match="no terminology"):
        selftest.check_segment(segmentation, "spinal cord", require_terminology=True, context=context)


def test_csa_check_accepts_human_areas_and_rejects_unit_errors(context):
    good = columns_to_table_node({"level": [2, 3, 4], "csa_mm2": [78.0, 71.5, float("nan")]}, "m", context=context)
    assert selftest.check_cord_csa(good) == pytest.approx(74.75)
    in_voxels = columns_to_table_node({"csa_mm2": [310.0, 298.0]}, "voxels", context=context)
    with pytest.raises(selftest.SelfTestFailure, match="outside the plausible"):
        selftest.check_cord_csa(in_voxels)
    with pytest.raises(selftest.SelfTestFailure, match="lacks columns"):
        selftest.check_cord_csa(columns_to_table_node({"area": [70.0]}, "other", context=context))


def test_heatmap_check_requires_values_in_zero_one_and_not_all_zero(context):
    ramp = np.linspace(0, 1, 2 * 3 * 4).reshape(2, 3, 4)
    assert selftest.check_heatmap(heatmap_to_node(Volume(ramp.astype(np.float32)), context=context)) == (0.0, 1.0)
    with pytest.raises(selftest.SelfTestFailure, match=r"not \[0, 1\]"):
        selftest.check_heatmap(_array_node(context, ramp * 255))
    with pytest.raises(selftest.SelfTestFailure, match="zero everywhere"):
        selftest.check_heatmap(_array_node(context, np.zeros((2, 3, 4))))


def test_heatmap_check_requires_a_colour_table_on_a_displayed_heatmap(context):
    node = _array_node(context, np.linspace(0, 1, 8).reshape(2, 2, 2))
    display = context.scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    node.SetAndObserveDisplayNodeID(display.GetID())
    with pytest.raises(selftest.SelfTestFailure, match="without a colour table"):
        selftest.check_heatmap(node)
    colors = context.scene.AddNewNodeByClass("vtkMRMLColorTableNode")
    colors.SetTypeToGrey()
    display.SetAndObserveColorNodeID(colors.GetID())
    selftest.check_heatmap(node)


def test_transform_check_requires_a_parent_transform_with_a_plausible_shift(context, volume_node):
    node, _, _ = volume_node
    with pytest.raises(selftest.SelfTestFailure, match="not under a transform"):
        selftest.check_transform(node)
    node.SetAndObserveTransformNodeID(_linear_transform(context, 4.0).GetID())
    assert selftest.check_transform(node) is node.GetParentTransformNode()
    node.SetAndObserveTransformNodeID(_linear_transform(context, 120.0).GetID())
    with pytest.raises(selftest.SelfTestFailure, match="by 120.0 mm"):
        selftest.check_transform(node)


def _case_nodes(context, volume_node):
    node, volume, cord = volume_node
    transform = _linear_transform(context, 2.0)
    node.SetAndObserveTransformNodeID(transform.GetID())
    return {
        "ct": node,
        "transform": transform,
        "heatmap": heatmap_to_node(Volume(np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4)), context=context),
        "segmentation": _cord_segmentation(context, cord, node, volume),
        "morphometry": columns_to_table_node({"csa_mm2": [70.0, 66.0, 74.0]}, "morphometry", context=context),
    }


def test_case_check_passes_a_complete_case_and_names_what_is_missing(context, volume_node):
    nodes = _case_nodes(context, volume_node)
    report = selftest.check_case_nodes(nodes, context)
    assert report["median_csa_mm2"] == 70.0 and report["heatmap_range"] == (0.0, 1.0)
    with pytest.raises(selftest.SelfTestFailure, match=r"no \['heatmap'\] node"):
        selftest.check_case_nodes({**nodes, "heatmap": None}, context)


def test_case_check_fails_when_the_ct_is_not_under_the_registration_transform(context, volume_node):
    nodes = _case_nodes(context, volume_node)
    nodes["ct"].SetAndObserveTransformNodeID(_linear_transform(context, 1.0).GetID())
    with pytest.raises(selftest.SelfTestFailure, match="not under the registration transform"):
        selftest.check_case_nodes(nodes, context)


def test_loading_an_unreadable_file_names_it(context, tmp_path):
    broken = tmp_path / "broken.nrrd"
    broken.write_text("not an image", encoding="utf-8")
    with pytest.raises(CSpineInputError, match="broken.nrrd"):
        read_volume_node(broken, "broken", context=context)
    assert context.scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0


def test_pipeline_self_test_reports_unavailable_while_the_shipped_models_are_missing(context, tmp_path, monkeypatch):
    from cspineai import pipeline
    from cspineai.models import registry

    monkeypatch.setattr(registry, "shipped_dir", lambda: tmp_path / "no-shipped-models")
    monkeypatch.setenv("CSPINEAI_USER_MODELS", str(tmp_path / "no-user-models"))
    with pytest.raises(selftest.SelfTestUnavailable, match=pipeline.DEFAULT_MODEL_IDS["classifier"]):
        selftest.run_pipeline_self_test(context, tmp_path)
    assert not (tmp_path / "cspineai-selftest-results").exists()


@pytest.mark.slow
def test_pipeline_self_test_checks_the_case_nodes(context, tmp_path):
    from cspineai.pipeline import bundled_case
    from test_pipeline_fixtures import small_models

    models = small_models(bundled_case())
    report = selftest.run_pipeline_self_test(context, tmp_path, device="cpu", models=models)
    assert report["cord_voxels"] > 0
    assert 20 <= report["median_csa_mm2"] <= 150
    assert report["heatmap_range"][1] == pytest.approx(1.0)
