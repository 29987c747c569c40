"""Geometry: coordinate conversions, resampling, cropping, reorientation and physical comparison."""

from __future__ import annotations

import numpy as np
import pytest

from cspineai import CSpineInputError, Volume
from cspineai.geometry import (
    CANONICAL_ORIENTATION,
    crop_to_box,
    index_to_world,
    lps_to_ras,
    obliquity_degrees,
    overlap_fraction,
    physically_equal,
    ras_to_lps,
    reorient,
    resample_like,
    resample_to_spacing,
    same_grid,
    world_to_index,
)
from helpers import DIRECTIONS, make_volume


def test_lps_and_ras_differ_by_the_sign_of_x_and_y():
    assert np.allclose(lps_to_ras([10.0, -20.0, 30.0]), [-10.0, 20.0, 30.0])
    assert np.allclose(ras_to_lps(lps_to_ras(np.arange(12.0).reshape(4, 3))), np.arange(12.0).reshape(4, 3))


@pytest.mark.parametrize("kind", list(DIRECTIONS))
def test_index_and_world_are_inverse_and_match_simpleitk(kind):
    volume = make_volume(kind)
    image = volume.to_sitk()
    ijk = np.array([[0, 0, 0], [3.5, 7.0, 2.25], [15, 19, 11]], dtype=float)
    lps = index_to_world(volume, ijk)
    for p, q in zip(ijk, lps, strict=True):
        assert np.allclose(image.TransformContinuousIndexToPhysicalPoint(tuple(p)), q)
    assert np.allclose(world_to_index(volume, lps), ijk)
    assert np.allclose(index_to_world(volume, ijk, "RAS"), lps_to_ras(lps))


def test_ijk_to_ras_is_slicer_convention():
    volume = make_volume("axial", spacing=(0.5, 0.6, 3.0), origin=(10.0, 20.0, 30.0))
    expected = np.array([[-0.5, 0, 0, -10.0], [0, -0.6, 0, -20.0], [0, 0, 3.0, 30.0], [0, 0, 0, 1]])
    assert np.allclose(volume.ijk_to_ras, expected)


@pytest.mark.parametrize("kind", list(DIRECTIONS))
def test_reorient_gives_the_canonical_order_without_changing_the_image(kind):
    volume = make_volume(kind)
    for plane in CANONICAL_ORIENTATION:
        out = reorient(volume, plane)
        assert out.plane == plane or kind == "oblique"
        assert physically_equal(volume, out)
        assert np.isclose(np.linalg.det(out.direction), 1.0)  # canonical orders are right-handed


def test_reorient_sagittal_puts_left_right_on_the_slice_axis():
    out = reorient(make_volume("axial", shape=(12, 20, 16)), "sagittal")
    assert out.shape == (16, 12, 20)  # k = LR (was i), j = SI (was k), i = AP (was j)
    assert np.allclose(out.direction[:, 2], [-1, 0, 0]) and np.allclose(out.direction[:, 1], [0, 0, -1])


def test_physically_equal_notices_a_changed_voxel_or_a_shift():
    volume = make_volume("oblique")
    changed = volume.copy()
    changed.array[2, 3, 4] += 1
    assert not physically_equal(volume, changed)
    shifted = Volume(volume.array, volume.spacing, np.add(volume.origin, (0, 0, 0.5)), volume.direction)
    assert not physically_equal(volume, shifted)


def test_resample_onto_itself_is_the_identity():
    volume = make_volume("oblique", dtype=np.float32)
    out = resample_like(volume, volume)
    assert np.allclose(out.array, volume.array, atol=1e-4)


def test_resample_nearest_keeps_labels_and_dtype():
    labels = make_volume("axial", dtype=np.uint8).with_array(
        (np.arange(12 * 20 * 16).reshape(12, 20, 16) % 5).astype(np.uint8)
    )
    reference = reorient(labels, "sagittal")
    out = resample_like(labels, reference, "nearest")
    assert out.array.dtype == np.uint8
    assert np.array_equal(out.array, reference.array)


def test_resample_linear_reproduces_a_linear_ramp_on_another_grid():
    # value = x(LPS mm) is reproduced exactly by linear interpolation wherever the new grid lies inside the old one.
    axial = make_volume("axial", shape=(20, 30, 30), spacing=(1.0, 1.0, 1.0), dtype=np.float32, origin=(0.0, 0.0, 0.0))
    x = index_to_world(axial, np.stack(np.meshgrid(*(np.arange(n) for n in axial.size_ijk), indexing="ij"), -1))[..., 0]
    ramp = axial.with_array(x.transpose(2, 1, 0).astype(np.float32))
    target = Volume(np.zeros((5, 10, 10), np.float32), (1.3, 1.7, 2.1), (4.0, 5.0, 3.0), DIRECTIONS["oblique"])
    out = resample_like(ramp, target, "linear", default_value=np.nan)
    xt = index_to_world(target, np.stack(np.meshgrid(*(np.arange(n) for n in target.size_ijk), indexing="ij"), -1))
    expected = xt[..., 0].transpose(2, 1, 0)
    inside = np.isfinite(out.array)
    assert inside.mean() > 0.5
    assert np.allclose(out.array[inside], expected[inside], atol=1e-3)


def test_resample_to_spacing_keeps_the_physical_extent():
    volume = make_volume("sagittal", shape=(12, 20, 16), spacing=(0.5, 0.5, 3.0), dtype=np.float32)
    out = resample_to_spacing(volume, (1.0, 1.0, 1.0))
    assert out.size_ijk == (8, 10, 36)
    extent = lambda v: np.array(v.size_ijk) * np.array(v.spacing)  # noqa: E731
    assert np.allclose(extent(out), extent(volume))


def test_crop_to_box_keeps_voxels_inside_and_their_positions():
    volume = make_volume("axial", shape=(12, 20, 16), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
    out = crop_to_box(volume, [2.0, 3.0, 4.0], [6.0, 8.0, 10.0])
    assert out.size_ijk == (5, 6, 4)
    assert np.allclose(out.origin, (2.0, 3.0, 4.0))
    assert np.array_equal(out.array, volume.array[2:6, 3:9, 2:7])


def test_crop_outside_the_image_is_refused():
    with pytest.raises(CSpineInputError, match="outside the image"):
        crop_to_box(make_volume(source="ct.nii.gz"), [500, 500, 500], [600, 600, 600])


def test_overlap_fraction_is_one_for_nested_and_zero_for_disjoint_volumes():
    big = make_volume("axial", shape=(20, 40, 40), spacing=(1, 1, 1), origin=(0, 0, 0))
    small = make_volume("axial", shape=(5, 5, 5), spacing=(1, 1, 1), origin=(10, 10, 10))
    far = make_volume("axial", shape=(5, 5, 5), spacing=(1, 1, 1), origin=(500, 0, 0))
    assert overlap_fraction(big, small) == pytest.approx(1.0)
    assert overlap_fraction(big, far) == 0.0


def test_obliquity_and_same_grid():
    assert obliquity_degrees(DIRECTIONS["axial"]) == pytest.approx(0.0)
    assert obliquity_degrees(DIRECTIONS["oblique"]) > 5
    a = make_volume()
    assert same_grid(a, a.copy())
    assert not same_grid(a, reorient(a, "sagittal"))
