"""Label map <-> segmentation node: names, colours, label values and standard terminology survive."""

from __future__ import annotations

import numpy as np
import pytest

from cspineai.errors import CSpineInputError
from cspineai.series import BODY_VALUES, CORD, CSF, DISC_VALUES, LABELS, POSTERIOR_VALUES
from helpers import make_volume

pytest.importorskip("slicer")

from cspineai.scene import (  # noqa: E402
    create_context,
    labelmap_to_segmentation_node,
    segment_infos,
    segmentation_node_to_labelmap,
    segmentation_to_labelmap_node,
    volume_to_node,
)
from cspineai.scene.terminology import TERMINOLOGY_BY_VALUE, Terminology, terminology_for_label  # noqa: E402
from cspineai.scene.volumes import node_to_volume  # noqa: E402

LABEL_BY_VALUE = {label.value: label for label in LABELS}


@pytest.fixture
def context():
    return create_context()


def spine_labels(kind: str = "sagittal"):
    """A label map holding cord, CSF, a vertebral body, a disc and posterior elements as separate blocks."""
    image = make_volume(kind)
    array = np.zeros(image.shape, dtype=np.int16)
    array[2:5, 2:6, 2:6] = CORD
    array[2:5, 6:9, 2:6] = CSF
    array[6:9, 2:7, 7:12] = BODY_VALUES["C4"]
    array[6:9, 8:11, 7:12] = DISC_VALUES["C4-C5"]
    array[9:11, 12:18, 1:15] = POSTERIOR_VALUES["T1"]
    return image, image.with_array(array)


def test_segments_are_named_coloured_and_keep_their_label_values(context):
    image, labels = spine_labels()
    image_node = volume_to_node(image, "T1_sag", context=context)
    segmentation = labelmap_to_segmentation_node(labels, "labels", reference_node=image_node, context=context)
    infos = segment_infos(segmentation)
    assert sorted(info.label_value for info in infos) == sorted(set(np.unique(labels.array)) - {0})
    for info in infos:
        label = LABEL_BY_VALUE[info.label_value]
        assert info.name == label.name
        # Slicer stores colours as 8-bit values.
        assert np.allclose(info.color, label.color, atol=1 / 255 + 1e-6)


def test_segments_carry_standard_snomed_terminology(context):
    _, labels = spine_labels()
    infos = {info.label_value: info for info in segment_infos(labelmap_to_segmentation_node(labels, context=context))}
    cord = infos[CORD].terminology
    assert (cord.category.value, cord.type.scheme, cord.type.value) == ("123037004", "SCT", "2748008")
    assert infos[CSF].terminology.type.value == "65216001"
    body = infos[BODY_VALUES["C4"]].terminology
    assert body.type.meaning == "Vertebral body" and body.region.meaning == "C4 vertebra"
    assert infos[DISC_VALUES["C4-C5"]].terminology.type.meaning == "C4/C5 disc"
    assert infos[POSTERIOR_VALUES["T1"]].terminology.type.value == "64864005"


def test_every_project_label_has_a_terminology_that_round_trips_through_slicer_serialisation():
    assert set(TERMINOLOGY_BY_VALUE) == set(LABEL_BY_VALUE)
    for value in LABEL_BY_VALUE:
        entry = terminology_for_label(value)
        assert Terminology.parse(entry.serialize()) == entry
    assert terminology_for_label(99) is None


def test_export_keeps_project_label_values_on_the_reference_grid(context):
    image, labels = spine_labels("oblique")
    image_node = volume_to_node(image, "image", context=context)
    segmentation = labelmap_to_segmentation_node(labels, reference_node=image_node, context=context)
    exported = segmentation_node_to_labelmap(segmentation, image_node, context=context)
    assert np.array_equal(exported.array, labels.array)
    assert np.allclose(exported.ijk_to_lps, labels.ijk_to_lps)
    # The label map node made for display holds the same values.
    node = segmentation_to_labelmap_node(segmentation, image_node, context=context)
    assert np.array_equal(node_to_volume(node).array, labels.array)


def test_segmentation_reference_geometry_is_the_source_volume(context):
    image, labels = spine_labels()
    image_node = volume_to_node(image, "image", context=context)
    segmentation = labelmap_to_segmentation_node(labels, reference_node=image_node, context=context)
    exported = segmentation_node_to_labelmap(segmentation, context=context)  # no reference: the stored geometry
    assert exported.shape == image.shape
    assert np.array_equal(exported.array, labels.array)


def test_temporary_nodes_are_not_left_in_the_scene(context):
    _, labels = spine_labels()
    before = context.scene.GetNodesByClass("vtkMRMLVolumeNode").GetNumberOfItems()
    segmentation = labelmap_to_segmentation_node(labels, context=context)
    segmentation_node_to_labelmap(segmentation, labels, context=context)
    assert context.scene.GetNodesByClass("vtkMRMLVolumeNode").GetNumberOfItems() == before


def test_reports_error_when_label_map_holds_values_outside_the_project_labels(context):
    _, labels = spine_labels()
    labels.array[0, 0, 0] = 77
    with pytest.raises(CSpineInputError, match=r"\[77\]"):
        labelmap_to_segmentation_node(labels, context=context)


def test_reports_error_when_a_segment_was_renamed_to_an_unknown_name(context):
    _, labels = spine_labels()
    segmentation = labelmap_to_segmentation_node(labels, "labels", context=context)
    segmentation.GetSegmentation().GetNthSegment(0).SetName("my structure")
    with pytest.raises(CSpineInputError, match="my structure"):
        segmentation_node_to_labelmap(segmentation, labels, context=context)
