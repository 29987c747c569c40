"""Volume <-> volume node: geometry survives exactly, for every orientation the project meets, and from files."""

from __future__ import annotations

import numpy as np
import pytest

from cspineai.errors import CSpineInputError
from cspineai.geometry import physically_equal
from cspineai.io import read_volume, write_volume
from cspineai.volume import Volume
from helpers import make_volume

pytest.importorskip("slicer")

from cspineai.scene import (  # noqa: E402  (after the skip: these need slicer-core)
    create_context,
    get_context,
    labelmap_to_segmentation_node,
    load_bundle,
    node_to_volume,
    read_volume_node,
    reset_default_context,
    save_bundle,
    segmentation_node_to_labelmap,
    update_node_from_volume,
    volume_to_node,
)
from cspineai.scene.volumes import node_geometry  # noqa: E402

KINDS = ("axial", "sagittal", "oblique", "left_handed")


@pytest.fixture
def context():
    return create_context()


@pytest.mark.parametrize("kind", KINDS)
def test_volume_survives_node_round_trip_physically(kind, context):
    volume = make_volume(kind)
    node = volume_to_node(volume, "image", context=context)
    back = node_to_volume(node)
    assert physically_equal(volume, back)
    assert back.array.dtype == volume.array.dtype
    # Geometry is copied exactly, not only "physically": the node's IJK->RAS is the volume's.
    spacing, origin, direction = node_geometry(node)
    assert np.allclose(spacing, volume.spacing) and np.allclose(origin, volume.origin)
    assert np.allclose(direction, volume.direction)


@pytest.mark.parametrize("kind", KINDS)
def test_file_to_node_agrees_between_cspineai_reader_and_slicer_reader(kind, context, tmp_path):
    volume = make_volume(kind)
    path = write_volume(volume, tmp_path / f"{kind}.nii.gz")
    ours = node_to_volume(volume_to_node(read_volume(path), "ours", context=context))
    slicers = node_to_volume(read_volume_node(path, context=context))
    assert physically_equal(ours, volume)
    assert physically_equal(slicers, volume)
    assert physically_equal(ours, slicers)


def test_node_array_is_a_copy_not_a_view_into_vtk_memory(context):
    volume = make_volume("axial")
    original = volume.array.copy()
    node = volume_to_node(volume, context=context)
    volume.array[...] = 0  # changing the source must not change the node
    back = node_to_volume(node)
    assert np.array_equal(back.array, original)
    back.array[...] = 7  # nor may the returned array write into the node
    assert np.array_equal(node_to_volume(node).array, original)


def test_node_can_be_updated_in_place_with_a_new_volume(context):
    node = volume_to_node(make_volume("axial"), "image", context=context)
    display = node.GetDisplayNode()
    replacement = make_volume("oblique", seed=3)
    update_node_from_volume(node, replacement)
    assert physically_equal(node_to_volume(node), replacement)
    assert node.GetDisplayNode() is display  # display settings kept


def test_reset_default_context_gives_an_empty_scene():
    first = get_context()
    volume_to_node(make_volume("axial"), "left over", context=first)
    fresh = reset_default_context()
    assert fresh.scene.GetFirstNodeByName("left over") is None
    assert get_context() is fresh


def test_label_map_node_holds_integer_labels(context):
    labels = make_volume("sagittal").with_array(np.zeros((12, 20, 16), dtype=np.uint8))
    labels.array[3:6, 4:9, 2:5] = 1
    node = volume_to_node(labels, "labels", labelmap=True, context=context)
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    assert np.array_equal(node_to_volume(node).array, labels.array)


def test_reports_error_when_node_is_under_an_unhardened_transform(context):
    node = volume_to_node(make_volume("axial"), "moved", context=context)
    transform = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(CSpineInputError, match="harden"):
        node_to_volume(node)


def test_reports_error_when_volume_is_not_3d(context):
    with pytest.raises(CSpineInputError, match="3-D"):
        volume_to_node(Volume(np.zeros((4, 5), np.int16), source="flat.nii"), context=context)


def test_reports_error_when_slicer_reader_is_given_a_missing_file(context, tmp_path):
    with pytest.raises(CSpineInputError, match="not found"):
        read_volume_node(tmp_path / "missing.nii.gz", context=context)


def test_default_context_serves_slicer_util_array_helpers():
    import slicer.util

    context = get_context()
    node = volume_to_node(Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4)), "helper test", context=context)
    assert slicer.mrmlScene is context.scene
    assert np.array_equal(slicer.util.arrayFromVolume(node), np.arange(24).reshape(2, 3, 4))
    assert slicer.modules.volumes.logic() is context.logic("volumes")


@pytest.mark.real_data
def test_real_mri_and_its_cord_mask_become_nodes_with_geometry_intact(real_t1_dir, context, tmp_path):
    image = read_volume(real_t1_dir / "t1w.nii.gz", modality="T1_sag")
    mask = read_volume(real_t1_dir / "t1w_seg-manual.nii.gz", allow_constant=True)
    image_node = volume_to_node(image, "T1", context=context)
    assert physically_equal(node_to_volume(image_node), image)
    assert physically_equal(node_to_volume(read_volume_node(real_t1_dir / "t1w.nii.gz", context=context)), image)

    cord = mask.with_array((mask.array > 0).astype(np.int16))
    segmentation = labelmap_to_segmentation_node(cord, "cord", reference_node=image_node, context=context)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    exported = segmentation_node_to_labelmap(segmentation, image_node, context=context)
    assert physically_equal(exported, cord)
    assert int(exported.array.sum()) == int(cord.array.sum()) > 0

    reloaded = load_bundle(save_bundle(tmp_path / "real.mrb", context))
    assert physically_equal(node_to_volume(reloaded.scene.GetFirstNodeByName("T1")), image)
    reloaded_cord = segmentation_node_to_labelmap(reloaded.scene.GetFirstNodeByName("cord"), image, context=reloaded)
    assert physically_equal(reloaded_cord, cord)
