"""Displacement field <-> grid transform node, checked against SimpleITK's DisplacementFieldTransform."""

from __future__ import annotations

import numpy as np
import pytest

from cspineai.errors import CSpineInputError
from cspineai.geometry import index_to_world, lps_to_ras, resample_like, world_to_index
from cspineai.volume import Volume
from helpers import DIRECTIONS, make_volume

pytest.importorskip("slicer")

from cspineai.scene import (  # noqa: E402
    apply_transform,
    create_context,
    displacement_to_transform_node,
    node_to_volume,
    to_sitk_displacement_transform,
    transform_node_to_displacement,
    volume_to_node,
)


@pytest.fixture
def context():
    return create_context()


def smooth_moving_image() -> Volume:
    """An oblique axial "CT" with smooth, everywhere-different intensities (so a wrong sample point shows)."""
    k, j, i = np.meshgrid(np.arange(20), np.arange(24), np.arange(28), indexing="ij")
    array = (100 * np.sin(i / 4.0) + 80 * np.cos(j / 5.0) + 60 * np.sin(k / 3.0) + 300).astype(np.float32)
    return Volume(array, (1.0, 1.2, 1.5), (-10.0, 5.0, 3.0), DIRECTIONS["oblique"])


def sagittal_reference_inside(moving: Volume) -> Volume:
    """A sagittal "MRI" grid centred in ``moving``, smaller than it, so every sample lands inside the CT."""
    centre = index_to_world(moving, (np.array(moving.size_ijk) - 1) / 2.0)
    direction = DIRECTIONS["sagittal"]
    size, spacing = np.array([8, 10, 12]), np.array([1.5, 1.5, 1.5])
    origin = centre - direction @ ((size - 1) / 2.0 * spacing)
    return Volume(np.zeros(size[::-1], np.float32), tuple(spacing), tuple(origin), direction)


def wavy_field(reference: Volume) -> np.ndarray:
    """A smooth, non-linear RAS displacement (mm) on the reference grid, up to about 2 mm."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in reference.shape), indexing="ij")
    return np.stack([2.0 * np.sin(i / 3.0), 1.5 * np.cos(j / 4.0), np.sin(k / 2.0)], axis=-1)


def test_displacement_field_and_its_grid_survive_the_transform_node(context):
    reference = make_volume("oblique", shape=(5, 6, 7))
    field = np.random.default_rng(3).normal(size=(*reference.shape, 3))
    node = displacement_to_transform_node(field, reference, context=context)
    back, grid = transform_node_to_displacement(node)
    assert np.array_equal(back, field)
    assert np.allclose(grid.ijk_to_lps, reference.ijk_to_lps)


def test_transform_node_maps_points_like_simpleitk_displacement_field_transform(context):
    moving = smooth_moving_image()
    reference = sagittal_reference_inside(moving)
    field = wavy_field(reference)
    node = displacement_to_transform_node(field, reference, context=context)
    sitk_transform = to_sitk_displacement_transform(field, reference)
    rng = np.random.default_rng(0)
    # Off-grid points exercise the interpolation, not only the stored vectors.
    ijk = rng.uniform(0, np.array(reference.size_ijk) - 1, size=(50, 3))
    points_lps = index_to_world(reference, ijk)
    slicer_transform = node.GetTransformFromParent()
    for point in points_lps:
        mapped_ras = np.array(slicer_transform.TransformPoint(lps_to_ras(point).tolist()))
        mapped_sitk = np.array(sitk_transform.TransformPoint(tuple(point)))
        assert np.allclose(lps_to_ras(mapped_ras), mapped_sitk, atol=1e-6)
    # And the field really moves points (a transform that does nothing would pass the comparison above).
    assert np.abs(field).max() > 1.0


def test_lps_displacement_is_flipped_to_ras_for_slicer(context):
    reference = make_volume("axial", shape=(4, 5, 6))
    field_lps = np.zeros((*reference.shape, 3))
    field_lps[..., 0] = 2.0  # 2 mm towards patient left
    node = displacement_to_transform_node(field_lps, reference, space="LPS", context=context)
    field_ras, _ = transform_node_to_displacement(node)
    assert np.allclose(field_ras[..., 0], -2.0) and np.allclose(field_ras[..., 1:], 0.0)


def test_hardened_volume_in_the_scene_matches_simpleitk_resampling_through_the_same_field(context):
    moving = smooth_moving_image()
    reference = sagittal_reference_inside(moving)
    field = wavy_field(reference)
    transform_node = displacement_to_transform_node(field, reference, context=context)
    moving_node = volume_to_node(moving, "CT", context=context)
    apply_transform(moving_node, transform_node, harden=True, context=context)
    hardened = node_to_volume(moving_node)

    # SimpleITK samples the original image through the same field at the hardened grid's voxels.
    expected = resample_like(
        moving, hardened, "linear", default_value=-1e4, transform=to_sitk_displacement_transform(field, reference)
    )
    untransformed = resample_like(moving, hardened, "linear", default_value=-1e4)
    k, j, i = np.meshgrid(*(np.arange(n) for n in hardened.shape), indexing="ij")
    ijk_in_reference = world_to_index(reference, index_to_world(hardened, np.stack([i, j, k], axis=-1)))
    # Compare where the field is defined (inside its grid); outside it VTK and ITK extrapolate differently.
    inside = np.all((ijk_in_reference >= 0) & (ijk_in_reference <= np.array(reference.size_ijk) - 1), axis=-1)
    inside &= expected.array > -1e3
    assert inside.sum() > 500
    error = np.abs(hardened.array - expected.array)[inside]
    assert error.max() < 1e-2  # float32 rounding of values around 300
    # The transform changes the image there: the comparison is not between two untransformed copies.
    assert np.abs(untransformed.array - expected.array)[inside].mean() > 5.0


def test_observed_transform_is_not_baked_in_until_hardened(context):
    reference = make_volume("axial", shape=(4, 5, 6))
    node = volume_to_node(reference, context=context)
    transform_node = displacement_to_transform_node(np.ones((*reference.shape, 3)), reference, context=context)
    apply_transform(node, transform_node, context=context)
    assert node.GetParentTransformNode() is transform_node
    assert np.array_equal(node.GetImageData().GetDimensions(), reference.size_ijk)


def test_reports_error_when_field_does_not_match_the_reference_grid(context):
    reference = make_volume("axial", shape=(4, 5, 6))
    with pytest.raises(CSpineInputError, match="does not match"):
        displacement_to_transform_node(np.zeros((4, 5, 7, 3)), reference, context=context)
    bad = np.zeros((4, 5, 6, 3))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(CSpineInputError, match="NaN"):
        displacement_to_transform_node(bad, reference, context=context)


def test_reports_error_when_node_is_not_a_grid_transform(context):
    linear = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "rigid")
    with pytest.raises(CSpineInputError, match="not a grid"):
        transform_node_to_displacement(linear)
