"""Working grids and intensity normalisation of the classifier's inputs."""

from __future__ import annotations

import numpy as np
import pytest

from cspineai.errors import CSpineInputError
from cspineai.geometry import index_to_world, reorient
from cspineai.preprocess import (
    WORKING_GRIDS,
    normalise_intensity,
    prepare_case,
    prepare_series,
    working_grid,
)
from cspineai.volume import Volume

# columns: LPS directions of i, j, k
SAGITTAL = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)  # as scanners write it: i->P, j->I, k->L
AXIAL_FLIPPED = np.diag([-1.0, -1.0, 1.0])  # RAS-style header: i->R, j->A


def spot_volume(direction, shape, spacing, spot_lps, background=100.0, spot=1000.0, source="synthetic", modality=""):
    """A volume centred on LPS (0, 0, 0): ``background`` with a 5-mm ball of value ``spot`` centred at ``spot_lps``."""
    half = np.asarray(direction) @ ((np.array(shape[::-1]) - 1) / 2.0 * np.asarray(spacing))
    volume = Volume(np.zeros(shape, dtype=np.float32), spacing, tuple(-half), direction, modality, source)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    world = index_to_world(volume, np.stack([i, j, k], axis=-1))
    inside = np.linalg.norm(world - np.asarray(spot_lps), axis=-1) <= 5.0
    volume.array = np.where(inside, spot, background).astype(np.float32)
    return volume


def brightest_point_lps(grid: Volume) -> np.ndarray:
    """Intensity-weighted centroid (LPS mm) of the voxels above half the maximum."""
    array = grid.array
    k, j, i = np.nonzero(array > 0.5 * array.max())
    weights = array[k, j, i]
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    return (index_to_world(grid, ijk) * weights[:, None]).sum(axis=0) / weights.sum()


# --- intensities ----------------------------------------------------------------------------------------------------
def test_ct_windows_map_to_zero_one_as_the_series_name_says():
    hu = np.array([-2000.0, -500.0, 500.0, 1500.0, 3000.0])
    np.testing.assert_allclose(normalise_intensity(hu, "CT_bone"), [0, 0, 0.5, 1, 1], atol=1e-6)
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 1000.0])
    np.testing.assert_allclose(normalise_intensity(hu, "CT_tissue"), [0, 0, 0.5, 1, 1], atol=1e-6)


def test_mri_is_scaled_between_its_half_and_ninety_nine_and_a_half_percentiles(rng):
    array = rng.normal(300.0, 50.0, size=(8, 30, 30)).astype(np.float32)
    scaled = normalise_intensity(array, "T1_sag")
    assert scaled.dtype == np.float32 and scaled.min() == 0.0 and scaled.max() == 1.0
    low, high = np.percentile(array, (0.5, 99.5))
    inside = (array > low) & (array < high)
    np.testing.assert_allclose(scaled[inside], (array[inside] - low) / (high - low), rtol=1e-5, atol=1e-6)
    # multiplying an MRI by a constant (scanner gain) changes nothing
    np.testing.assert_allclose(normalise_intensity(array * 7.0, "T1_sag"), scaled, atol=1e-5)


# --- geometry -------------------------------------------------------------------------------------------------------
def test_working_grid_is_canonical_fixed_size_and_centred_on_the_field_of_view():
    volume = spot_volume(SAGITTAL, (12, 100, 90), (0.9, 0.9, 3.3), (0.0, 0.0, 0.0))
    grid = working_grid(volume, "T1_sag")
    assert grid.shape == WORKING_GRIDS["T1_sag"].size
    assert grid.spacing == WORKING_GRIDS["T1_sag"].spacing
    np.testing.assert_allclose(grid.direction, reorient(volume).direction)
    assert grid.plane == "sagittal"

    def centre(v):
        return index_to_world(v, (np.array(v.size_ijk) - 1) / 2.0)

    np.testing.assert_allclose(centre(grid), centre(volume), atol=1e-6)


@pytest.mark.parametrize(
    ("series", "direction", "shape", "spacing"),
    [
        ("T1_sag", SAGITTAL, (14, 110, 100), (0.8, 0.8, 3.0)),
        ("CT_bone", AXIAL_FLIPPED, (40, 120, 110), (0.6, 0.6, 3.0)),
        ("T2_tra", np.eye(3), (30, 64, 64), (2.0, 2.0, 4.0)),
    ],
)
def test_a_structure_stays_at_its_physical_position_on_the_working_grid(series, direction, shape, spacing):
    spot_lps = (8.0, -12.0, 15.0)
    volume = spot_volume(direction, shape, spacing, spot_lps, source=f"{series}.nii.gz")
    prepared = prepare_series(volume, series)
    assert tuple(prepared.tensor.shape) == (1, *WORKING_GRIDS[series].size)
    assert str(prepared.tensor.dtype) == "torch.float32"
    assert float(prepared.tensor.min()) >= 0.0 and float(prepared.tensor.max()) <= 1.0
    np.testing.assert_array_equal(prepared.tensor[0].numpy(), prepared.grid.array)
    # within one working voxel along the thickest axis
    np.testing.assert_allclose(brightest_point_lps(prepared.grid), spot_lps, atol=max(WORKING_GRIDS[series].spacing))


def test_area_outside_the_field_of_view_is_air():
    volume = spot_volume(np.eye(3), (10, 30, 30), (1.0, 1.0, 3.0), (0, 0, 0), background=100.0, spot=100.0)
    volume.array[0, 0, 0] = 101.0  # not constant
    prepared = prepare_series(volume, "CT_tissue")
    assert prepared.grid.array[0, 0, 0] == 0.0  # -1024 HU, far below the soft-tissue window
    assert prepared.grid.array[16, 48, 48] == pytest.approx((100.0 - (40 - 200)) / 400.0, abs=1e-3)


def test_fine_stripes_are_smoothed_before_downsampling_instead_of_aliasing():
    volume = spot_volume(np.eye(3), (12, 60, 300), (0.5, 0.5, 4.5), (0, 0, 0))
    volume.array[:] = np.where(np.arange(300) % 2 == 0, -500.0, 1500.0)[None, None, :]  # 1-mm stripes along i
    array = prepare_series(volume, "CT_bone").grid.array
    centre = array[14:18, 40:56, 40:56]
    assert abs(float(centre.mean()) - 0.5) < 0.05
    assert float(centre.std()) < 0.05  # linear interpolation alone would pick stripes: values near 0 and 1


def test_reduced_working_size_keeps_the_field_of_view():
    from cspineai.preprocess import grid_for_size

    grid = grid_for_size("T1_sag", (8, 64, 64))
    default = WORKING_GRIDS["T1_sag"]
    np.testing.assert_allclose(np.array(grid.spacing) * grid.size[::-1], np.array(default.spacing) * default.size[::-1])
    volume = spot_volume(SAGITTAL, (14, 110, 100), (0.8, 0.8, 3.0), (8.0, -12.0, 15.0))
    assert prepare_series(volume, "T1_sag", grid).tensor.shape == (1, 8, 64, 64)


# --- bad input ------------------------------------------------------------------------------------------------------
def test_reports_error_naming_the_series_when_it_is_missing():
    ct = spot_volume(np.eye(3), (10, 30, 30), (1.0, 1.0, 3.0), (0, 0, 0))
    with pytest.raises(CSpineInputError, match="T1_sag series.*required"):
        prepare_case({"CT_bone": ct}, ["T1_sag", "CT_bone"])


def test_reports_error_naming_the_series_when_it_is_two_dimensional():
    flat = Volume(np.random.default_rng(0).random((1, 40, 40)), (1.0, 1.0, 3.0), direction=SAGITTAL, source="sag.nii")
    ct = spot_volume(np.eye(3), (10, 30, 30), (1.0, 1.0, 3.0), (0, 0, 0))
    with pytest.raises(CSpineInputError, match=r"T1_sag series \(sag.nii\).*2-D"):
        prepare_case({"T1_sag": flat, "CT_bone": ct}, ["T1_sag", "CT_bone"])
    with pytest.raises(CSpineInputError, match="CT_bone series.*2-D"):
        prepare_series(Volume(np.ones((30, 30)) * np.arange(30)), "CT_bone")


def test_reports_error_when_a_series_is_acquired_in_the_wrong_plane():
    axial = spot_volume(np.eye(3), (10, 30, 30), (1.0, 1.0, 3.0), (0, 0, 0), source="t1.nii.gz")
    with pytest.raises(CSpineInputError, match=r"T1_sag series \(t1.nii.gz\).*sagittal"):
        prepare_series(axial, "T1_sag")


@pytest.mark.real_data
def test_real_mri_is_prepared_with_its_cord_at_the_same_place(real_t1_dir):
    from cspineai.geometry import resample_like
    from cspineai.io import read_volume

    image = read_volume(real_t1_dir / "t1w.nii.gz")
    mask = read_volume(real_t1_dir / "t1w_seg-manual.nii.gz", allow_constant=True)
    assert image.plane == "axial"  # the shared case is a thin axial slab: it stands in for the axial MRI series
    prepared = prepare_series(image, "T2_tra")
    assert prepared.grid.shape == WORKING_GRIDS["T2_tra"].size
    assert 0.0 <= prepared.grid.array.min() and prepared.grid.array.max() <= 1.0 and prepared.grid.array.std() > 0.05
    cord_on_grid = resample_like(mask, prepared.grid, "nearest")
    k, j, i = np.nonzero(mask.array > 0)
    centroid = index_to_world(mask, np.stack([i, j, k], axis=-1).astype(float)).mean(axis=0)
    k, j, i = np.nonzero(cord_on_grid.array > 0)
    assert len(k) > 0
    centroid_on_grid = index_to_world(prepared.grid, np.stack([i, j, k], axis=-1).astype(float)).mean(axis=0)
    np.testing.assert_allclose(centroid_on_grid, centroid, atol=WORKING_GRIDS["T2_tra"].spacing[2])
