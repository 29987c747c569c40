"""The assertions of Slicer's self-test (``CSpineAITest``), run here against slicer-core: they pass on good nodes and,
so that they cannot pass vacuously, fail on each kind of bad node."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from cspineai import selftest  # noqa: E402
from cspineai.errors import CSpineInputError  # noqa: E402


@pytest.fixture
def scene():
    """A scene with the Segmentations logic, which registers the segment representation converters."""
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    yield scene  # the logic stays referenced (alive) until the test is done
    logic.SetMRMLScene(None)


@pytest.fixture
def volume_node(scene, tmp_path):
    volume, cord = selftest.synthetic_cord_volume(radius_mm=3.0, shape_kji=(4, 24, 24))
    from cspineai.io import write_volume

    path = write_volume(volume, tmp_path / "t2.nrrd", compress=False)
    return selftest.load_volume(scene, path, "t2"), volume, cord


def _array_node(scene, array: np.ndarray, name: str = "heatmap"):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    from vtk.util.numpy_support import vtk_to_numpy

    vtk_to_numpy(image.GetPointData().GetScalars())[:] = array.astype(np.float32).ravel()
    node.SetAndObserveImageData(image)
    return node


def _linear_transform(scene, shift_mm: float):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, shift_mm)
    node.SetMatrixTransformToParent(matrix)
    return node


def test_scene_self_test_round_trips_volume_segment_and_table_with_the_cylinders_area(scene, tmp_path):
    report = selftest.run_scene_self_test(scene, tmp_path, radius_mm=4.0)
    assert report["expected_csa_mm2"] == pytest.approx(np.pi * 16, abs=0.01)
    assert abs(report["median_csa_mm2"] - report["expected_csa_mm2"]) <= 0.1 * report["expected_csa_mm2"]
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 1


def test_volume_check_catches_a_geometry_that_differs_from_the_file(volume_node):
    node, volume, _ = volume_node
    selftest.check_volume_matches(node, volume)
    node.SetSpacing(1.0, 1.0, 1.0)
    with pytest.raises(selftest.SelfTestFailure, match="geometry differs"):
        selftest.check_volume_matches(node, volume)


def test_segment_check_reads_back_the_voxels_written_and_names_a_missing_segment(scene, volume_node):
    node, _, cord = volume_node
    segmentation = selftest.add_segmentation(scene, cord, node, "spinal cord")
    assert selftest.check_segment(segmentation, "spinal cord") == int(cord.sum())
    with pytest.raises(selftest.SelfTestFailure, match="no segment named 'CSF'"):
        selftest.check_segment(segmentation, "CSF")
    with pytest.raises(selftest.SelfTestFailure, match="expected at least"):
        selftest.check_segment(segmentation, "spinal cord", min_voxels=int(cord.sum()) + 1)


def test_segment_check_fails_on_an_empty_cord(scene, volume_node):
    node, _, cord = volume_node
    empty = selftest.add_segmentation(scene, np.zeros_like(cord), node, "spinal cord")
    with pytest.raises(selftest.SelfTestFailure, match="has 0 voxels"):
        selftest.check_segment(empty, "spinal cord")


def test_csa_check_accepts_human_areas_and_rejects_unit_errors(scene):
    good = selftest.add_table(scene, "morphometry", {"level": [2, 3, 4], "csa_mm2": [78.0, 71.5, float("nan")]})
    assert selftest.check_cord_csa(good) == pytest.approx(74.75)
    in_voxels = selftest.add_table(scene, "voxels", {"csa_mm2": [310.0, 298.0]})
    with pytest.raises(selftest.SelfTestFailure, match="outside the plausible"):
        selftest.check_cord_csa(in_voxels)
    with pytest.raises(selftest.SelfTestFailure, match="lacks columns"):
        selftest.check_cord_csa(selftest.add_table(scene, "other", {"area": [70.0]}))


def test_heatmap_check_requires_values_in_zero_one_and_not_all_zero(scene):
    ramp = np.linspace(0, 1, 2 * 3 * 4).reshape(2, 3, 4)
    assert selftest.check_heatmap(_array_node(scene, ramp)) == (0.0, 1.0)
    with pytest.raises(selftest.SelfTestFailure, match=r"not \[0, 1\]"):
        selftest.check_heatmap(_array_node(scene, ramp * 255))
    with pytest.raises(selftest.SelfTestFailure, match="zero everywhere"):
        selftest.check_heatmap(_array_node(scene, np.zeros((2, 3, 4))))


def test_heatmap_check_requires_a_colour_table_on_a_displayed_heatmap(scene):
    node = _array_node(scene, np.linspace(0, 1, 8).reshape(2, 2, 2))
    display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    node.SetAndObserveDisplayNodeID(display.GetID())
    with pytest.raises(selftest.SelfTestFailure, match="without a colour table"):
        selftest.check_heatmap(node)
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode")
    colors.SetTypeToGrey()
    display.SetAndObserveColorNodeID(colors.GetID())
    selftest.check_heatmap(node)


def test_transform_check_requires_a_parent_transform_with_a_plausible_shift(scene, volume_node):
    node, _, _ = volume_node
    with pytest.raises(selftest.SelfTestFailure, match="not under a transform"):
        selftest.check_transform(node)
    node.SetAndObserveTransformNodeID(_linear_transform(scene, 4.0).GetID())
    assert selftest.check_transform(node) is node.GetParentTransformNode()
    node.SetAndObserveTransformNodeID(_linear_transform(scene, 120.0).GetID())
    with pytest.raises(selftest.SelfTestFailure, match="by 120.0 mm"):
        selftest.check_transform(node)


def _case_nodes(scene, volume_node):
    node, _, cord = volume_node
    transform = _linear_transform(scene, 2.0)
    node.SetAndObserveTransformNodeID(transform.GetID())
    return {
        "ct": node,
        "transform": transform,
        "heatmap": _array_node(scene, np.linspace(0, 1, 24).reshape(2, 3, 4)),
        "segmentation": selftest.add_segmentation(scene, cord, node, "spinal cord"),
        "morphometry": selftest.add_table(scene, "morphometry", {"csa_mm2": [70.0, 66.0, 74.0]}),
    }


def test_case_check_passes_a_complete_case_and_names_what_is_missing(scene, volume_node):
    nodes = _case_nodes(scene, volume_node)
    report = selftest.check_case_nodes(nodes)
    assert report["median_csa_mm2"] == 70.0 and report["heatmap_range"] == (0.0, 1.0)
    with pytest.raises(selftest.SelfTestFailure, match=r"no \['heatmap'\] node"):
        selftest.check_case_nodes({**nodes, "heatmap": None})


def test_case_check_fails_when_the_ct_is_not_under_the_registration_transform(scene, volume_node):
    nodes = _case_nodes(scene, volume_node)
    nodes["ct"].SetAndObserveTransformNodeID(_linear_transform(scene, 1.0).GetID())
    with pytest.raises(selftest.SelfTestFailure, match="not under the registration transform"):
        selftest.check_case_nodes(nodes)


def test_loading_an_unreadable_file_names_it(scene, tmp_path):
    broken = tmp_path / "broken.nrrd"
    broken.write_text("not an image")
    with pytest.raises(CSpineInputError, match="broken.nrrd"):
        selftest.load_volume(scene, broken, "broken")
    assert scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0


@pytest.mark.skipif(importlib.util.find_spec("cspineai.pipeline") is not None, reason="the pipeline exists: see below")
def test_pipeline_self_test_reports_unavailable_rather_than_passing_before_the_pipeline_exists(scene, tmp_path):
    with pytest.raises(selftest.SelfTestUnavailable, match="pipeline"):
        selftest.run_pipeline_self_test(scene, tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("cspineai.pipeline") is None, reason="cspineai.pipeline has not landed yet"
)
def test_pipeline_self_test_checks_the_case_nodes(scene, tmp_path):
    try:
        report = selftest.run_pipeline_self_test(scene, tmp_path, device="cpu")
    except selftest.SelfTestUnavailable as reason:
        pytest.skip(f"pipeline self-test not wired yet: {reason}")
    assert report["cord_voxels"] > 0
