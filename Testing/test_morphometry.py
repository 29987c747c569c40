"""Cord morphometry against shapes of known geometry (partial-volume masks by supersampling) and against the Spinal
Cord Toolbox's figures on the shared real case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from cspineai.errors import CSpineInputError
from cspineai.io import read_volume
from cspineai.morphometry import (
    LEVEL_COLUMNS,
    SLICE_COLUMNS,
    assign_levels,
    measure_cord,
    mscc,
    mscc_profile,
    tilt_correction,
    write_outputs,
)
from cspineai.volume import Volume

SCT_CSA_MEAN = 70.296283  # ../shared/data/real/sct_t1w/README.md: SCT on the manual mask, angle-corrected
SCT_AREA_MEAN = 70.610390  # the same without angle correction


def cylinder_fraction(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    semi_axes,
    tilt_deg: float = 0.0,
    azimuth_deg: float = 90.0,
    supersample: int = 4,
) -> np.ndarray:
    """Partial-volume fraction ``(K, J, I)`` of an elliptic cylinder through the volume centre, on an LPS grid.

    ``semi_axes``: ``(a, b)`` mm, or a function of k giving them per slice (a straight stack). ``a`` lies along the
    projection of L onto the cross-section, ``b`` perpendicular to it. The axis is tilted by ``tilt_deg`` from S
    towards the in-plane direction ``azimuth_deg`` (0 = L, 90 = P, so 90 is a sagittal-plane tilt).
    """
    theta, phi = math.radians(tilt_deg), math.radians(azimuth_deg)
    t = np.array([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)])
    e1 = np.array([1.0, 0.0, 0.0]) - t[0] * t
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(t, e1)
    centre = (np.array(shape[::-1]) - 1) / 2 * np.array(spacing)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    oi, oj, ok = np.meshgrid(offsets, offsets, offsets, indexing="ij")
    jj, ii = np.mgrid[0 : shape[1], 0 : shape[2]]
    out = np.zeros(shape)
    for k in range(shape[0]):
        a, b = semi_axes(k) if callable(semi_axes) else semi_axes
        # (sub, J, I) points of slice k, in mm relative to the centre
        x = (ii[None] + oi.ravel()[:, None, None]) * spacing[0] - centre[0]
        y = (jj[None] + oj.ravel()[:, None, None]) * spacing[1] - centre[1]
        z = (k + ok.ravel()[:, None, None]) * spacing[2] - centre[2]
        along = x * t[0] + y * t[1] + z * t[2]
        qx, qy, qz = x - along * t[0], y - along * t[1], z - along * t[2]
        p1 = qx * e1[0] + qy * e1[1] + qz * e1[2]
        p2 = qx * e2[0] + qy * e2[1] + qz * e2[2]
        out[k] = np.mean((p1 / a) ** 2 + (p2 / b) ** 2 <= 1.0, axis=0)
    return out


def cord_volume(fraction: np.ndarray, spacing, source: str = "synthetic_cord.nii.gz") -> Volume:
    return Volume(fraction.astype(np.float32), spacing, (0.0, 0.0, 0.0), np.eye(3), source=source)


SPACING = (0.6, 0.5, 1.5)  # anisotropic in-plane on purpose: everything must be done in mm
TILTED = {"shape": (20, 72, 40), "spacing": SPACING, "semi_axes": (6.0, 4.0), "tilt_deg": 30.0}


@pytest.fixture(scope="module")
def tilted_cylinder() -> np.ndarray:
    """Cord 12 x 8 mm (RL x AP) whose axis leans 30 degrees forward from S, in the sagittal plane."""
    return cylinder_fraction(**TILTED)


# --- CSA and angle correction -------------------------------------------------------------------------------------
def test_csa_of_a_straight_elliptic_cylinder_equals_pi_a_b():
    a, b = 6.0, 4.0
    result = measure_cord(cord_volume(cylinder_fraction((12, 32, 32), SPACING, (a, b)), SPACING))
    csa = result.column("csa_mm2")
    assert len(csa) == 12
    np.testing.assert_allclose(csa, math.pi * a * b, rtol=0.01)
    np.testing.assert_allclose(result.column("angle_deg"), 0.0, atol=0.2)


def test_csa_of_a_cylinder_tilted_30_degrees_is_corrected_back_to_pi_a_b(tilted_cylinder):
    a, b = TILTED["semi_axes"]
    result = measure_cord(cord_volume(tilted_cylinder, SPACING))
    area, csa = result.column("area_mm2"), result.column("csa_mm2")
    # The oblique section is larger by 1 / cos(30 deg); the correction must undo exactly that.
    np.testing.assert_allclose(area, math.pi * a * b / math.cos(math.radians(30)), rtol=0.01)
    np.testing.assert_allclose(csa, math.pi * a * b, rtol=0.01)
    np.testing.assert_allclose(result.column("angle_deg"), 30.0, atol=0.3)
    np.testing.assert_allclose(np.abs(result.column("angle_rl_deg")), 30.0, atol=0.3)  # a sagittal-plane tilt
    np.testing.assert_allclose(result.column("angle_ap_deg"), 0.0, atol=0.3)
    uncorrected = measure_cord(cord_volume(tilted_cylinder, SPACING), angle_correction=False)
    np.testing.assert_allclose(uncorrected.column("csa_mm2"), area)


def test_csa_of_a_diagonally_tilted_cylinder_uses_the_full_angle_not_the_product_of_its_components():
    # Tilt towards L and P at once: SCT's cos(angle_AP) * cos(angle_RL) would be 1% low here; cos(angle) is exact.
    a, b = 5.0, 4.0
    fraction = cylinder_fraction((20, 64, 64), (0.5, 0.5, 1.5), (a, b), tilt_deg=30.0, azimuth_deg=45.0)
    result = measure_cord(cord_volume(fraction, (0.5, 0.5, 1.5)))
    np.testing.assert_allclose(result.column("csa_mm2"), math.pi * a * b, rtol=0.01)
    np.testing.assert_allclose(result.column("angle_deg"), 30.0, atol=0.3)


def test_a_cord_in_two_parts_is_reported_once_with_its_slices_and_its_area_counts_both(caplog):
    a, b = 3.0, 2.0
    fraction = cylinder_fraction((12, 32, 32), SPACING, (a, b))
    fraction[3:6, 2:4, 2:4] = 1.0  # a second piece in slices 3-5 and 9, far from the cord
    fraction[9, 2:4, 2:4] = 1.0
    with caplog.at_level("WARNING", logger="cspineai.morphometry"):
        result = measure_cord(cord_volume(fraction, SPACING))
    split = [r for r in caplog.records if "several parts" in r.getMessage()]
    assert len(split) == 1
    assert "4 of 12 slices" in split[0].getMessage() and "slices 3-5, 9;" in split[0].getMessage()
    rows = {row["slice"]: row for row in result.slices}
    piece = 4 * SPACING[0] * SPACING[1]
    assert rows[4]["components"] == 2 and rows[0]["components"] == 1
    assert rows[4]["area_mm2"] == pytest.approx(rows[0]["area_mm2"] + piece, rel=1e-6)


def test_tilt_correction_has_determinant_cos_theta_and_keeps_the_perpendicular_direction():
    cos_theta, m = tilt_correction(0.3, -0.4)  # tan(theta) = 0.5
    assert cos_theta == pytest.approx(1 / math.sqrt(1.25))
    assert np.linalg.det(m) == pytest.approx(cos_theta)
    perpendicular = np.array([0.4, 0.3]) / 0.5
    np.testing.assert_allclose(m @ perpendicular, perpendicular, atol=1e-12)


def test_measurements_do_not_depend_on_the_stored_axis_order(tilted_cylinder):
    axial = cord_volume(tilted_cylinder, SPACING)
    # The same voxels stored as a sagittal acquisition (k towards L): the module must reorient, not assume.
    sagittal = Volume.from_sitk(sitk.DICOMOrient(axial.to_sitk(), "PIL"), source="sagittal_cord.nii.gz")
    assert sagittal.plane == "sagittal"
    a, b = measure_cord(axial), measure_cord(sagittal)
    np.testing.assert_allclose(b.column("csa_mm2"), a.column("csa_mm2"), rtol=1e-6)
    np.testing.assert_allclose(b.column("diameter_ap_mm"), a.column("diameter_ap_mm"), rtol=1e-6)


def test_an_oblique_acquisition_is_measured_in_its_own_slice_frame():
    from helpers import DIRECTIONS

    fraction = cylinder_fraction((12, 32, 32), SPACING, (6.0, 4.0))
    oblique = Volume(fraction.astype(np.float32), SPACING, (5.0, -3.0, 40.0), DIRECTIONS["oblique"], source="obl.nrrd")
    result = measure_cord(oblique)
    np.testing.assert_allclose(result.column("csa_mm2"), math.pi * 24.0, rtol=0.01)
    # The centreline is reported in RAS: the straight cord runs along the rotated k axis.
    ras = result.centreline_ras
    direction = (ras[0] - ras[-1]) / np.linalg.norm(ras[0] - ras[-1])
    k_axis_ras = np.diag([-1.0, -1.0, 1.0]) @ DIRECTIONS["oblique"][:, 2]
    assert abs(direction @ k_axis_ras) == pytest.approx(1.0, abs=1e-3)


# --- shape ------------------------------------------------------------------------------------------------------------
def test_diameters_of_an_ellipse_are_its_axes_and_their_ratio_is_the_compression_ratio():
    a, b = 6.0, 4.0  # RL semi-axis, AP semi-axis
    result = measure_cord(cord_volume(cylinder_fraction((6, 32, 32), SPACING, (a, b)), SPACING))
    np.testing.assert_allclose(result.column("diameter_rl_mm"), 2 * a, rtol=0.02)
    np.testing.assert_allclose(result.column("diameter_ap_mm"), 2 * b, rtol=0.02)
    np.testing.assert_allclose(result.column("compression_ratio"), b / a, rtol=0.03)
    np.testing.assert_allclose(result.column("orientation_deg"), 0.0, atol=1.0)
    np.testing.assert_allclose(result.column("eccentricity"), math.sqrt(1 - (b / a) ** 2), atol=0.02)
    assert np.all(result.column("solidity") > 0.97)


def test_diameters_of_a_tilted_cylinder_are_angle_corrected(tilted_cylinder):
    a, b = TILTED["semi_axes"]
    result = measure_cord(cord_volume(tilted_cylinder, SPACING))
    # In the slice the AP extent is 2b / cos(30 deg) = 9.24 mm; corrected it is the true 8 mm.
    np.testing.assert_allclose(result.column("diameter_ap_mm"), 2 * b, rtol=0.02)
    np.testing.assert_allclose(result.column("diameter_rl_mm"), 2 * a, rtol=0.02)


def test_solidity_of_a_crescent_is_well_below_one():
    jj, ii = np.mgrid[0:40, 0:40] * 0.5
    disc = (ii - 10) ** 2 + (jj - 10) ** 2 <= 36
    bite = (ii - 10) ** 2 + (jj - 14) ** 2 <= 16
    fraction = np.repeat((disc & ~bite)[None].astype(np.float32), 4, axis=0)
    result = measure_cord(cord_volume(fraction, (0.5, 0.5, 1.0)))
    assert np.all(result.column("solidity") < 0.85)


# --- levels, SAC and MSCC ---------------------------------------------------------------------------------------------
def level_map(shape) -> np.ndarray:
    """Vertebral bodies (anterior block) C5 at k 2..8, C4 at 12..18, C3 at 22..28 (k towards S)."""
    labels = np.zeros(shape, dtype=np.uint8)
    for value, (k0, k1) in {5: (2, 8), 4: (12, 18), 3: (22, 28)}.items():  # label = 3 + index in C2..T1
        labels[k0 : k1 + 1, 0:4, :] = value + 1
    return labels


def test_each_slice_gets_the_nearest_vertebral_body_and_ties_go_cranial():
    extents = {"C3": (22.0, 28.0), "C4": (12.0, 18.0), "C5": (2.0, 8.0)}
    levels = assign_levels(np.arange(30.0), extents)
    assert levels[:10] == ["C5"] * 10  # k = 10 is 2 from C5 and 2 from C4: cranial C4
    assert levels[10:20] == ["C4"] * 10
    assert levels[20:] == ["C3"] * 10
    assert assign_levels(np.arange(3.0), {}) == ["", "", ""]


def test_per_level_means_average_the_slices_of_each_level():
    shape, spacing = (30, 32, 32), (0.5, 0.5, 1.5)
    size = {"C3": (5.0, 4.0), "C4": (4.5, 3.5), "C5": (4.0, 3.0)}
    expected = ["C5"] * 10 + ["C4"] * 10 + ["C3"] * 10  # by k, see the previous test
    fraction = cylinder_fraction(shape, spacing, lambda k: size[expected[k]])
    labels = Volume(level_map(shape), spacing, (0.0, 0.0, 0.0), np.eye(3), source="levels.nii.gz")
    result = measure_cord(cord_volume(fraction, spacing), levels=labels)
    assert [row["level"] for row in result.slices] == expected[::-1]  # rows run superior first
    assert [row["level"] for row in result.levels] == ["C3", "C4", "C5"]
    for row in result.levels:
        a, b = size[row["level"]]
        assert row["slices"] == 10
        assert row["csa_mm2"] == pytest.approx(math.pi * a * b, rel=0.01)
        assert row["diameter_ap_mm"] == pytest.approx(2 * b, rel=0.02)
        slices = [r["csa_mm2"] for r in result.slices if r["level"] == row["level"]]
        assert row["csa_mm2"] == pytest.approx(np.mean(slices))
        assert row["csa_sd_mm2"] == pytest.approx(np.std(slices))


def test_sac_is_the_canal_area_and_sac_over_csa_its_ratio_to_the_cord():
    shape, spacing = (6, 48, 48), (0.5, 0.5, 1.5)
    a, b, radius = 5.0, 3.5, 8.0
    cord = cylinder_fraction(shape, spacing, (a, b))
    canal = cylinder_fraction(shape, spacing, (radius, radius))
    csf = Volume((canal - cord).astype(np.float32), spacing, (0.0, 0.0, 0.0), np.eye(3), source="csf.nii.gz")
    result = measure_cord(cord_volume(cord, spacing), csf=csf)
    np.testing.assert_allclose(result.column("sac_mm2"), math.pi * radius**2, rtol=0.01)
    np.testing.assert_allclose(result.column("sac_csa_ratio"), radius**2 / (a * b), rtol=0.015)
    # The same anatomy as one label map (1 cord, 2 CSF), given as the CSF input: the canal is CSF plus cord.
    label_map = np.where(cord > 0.5, 1, np.where(canal > 0.5, 2, 0)).astype(np.uint8)
    labels = Volume(label_map, spacing, (0.0, 0.0, 0.0), np.eye(3), source="labels.nii.gz")
    from_labels = measure_cord(cord_volume(cord, spacing), csf=labels)
    np.testing.assert_allclose(from_labels.column("sac_mm2"), math.pi * radius**2, rtol=0.02)


def test_a_canal_mask_on_another_grid_is_resampled_onto_the_cord_grid():
    shape, spacing = (6, 48, 48), (0.5, 0.5, 1.5)
    cord = cylinder_fraction(shape, spacing, (5.0, 3.5))
    # A canal mask holding the cord too, on a coarser grid whose centre coincides with the cord grid's.
    coarse = cylinder_fraction((6, 24, 24), (1.0, 1.0, 1.5), (8.0, 8.0))
    canal = Volume(coarse.astype(np.float32), (1.0, 1.0, 1.5), (-0.25, -0.25, 0.0), np.eye(3), source="canal.nrrd")
    result = measure_cord(cord_volume(cord, spacing), csf=canal)
    np.testing.assert_allclose(result.column("sac_mm2"), math.pi * 64.0, rtol=0.02)


def test_mscc_of_the_hand_example_is_6_612_percent():
    assert mscc(6.85, 7.65, 7.02) == pytest.approx(6.612, abs=5e-4)


def test_mscc_profile_uses_healthy_windows_above_and_below():
    distance = np.arange(61.0)
    ap = np.full(61, 8.0)
    ap[30] = 6.0
    ap[:15] = 9.0  # only the window above (0..20 mm from slice 30) sees part of this
    profile = mscc_profile(distance, ap, window_distance_mm=10.0, window_extent_mm=20.0)
    m_a = ap[0:21].mean()  # 10..30 mm above slice 30
    assert profile[30] == pytest.approx(mscc(6.0, m_a, 8.0))
    assert np.isnan(profile[5]) and np.isnan(profile[55])  # no window above / below


def test_measured_mscc_finds_a_focal_narrowing():
    shape, spacing = (40, 32, 32), (0.5, 0.5, 1.5)
    fraction = cylinder_fraction(shape, spacing, lambda k: (5.0, 3.0) if 19 <= k <= 20 else (5.0, 4.0))
    result = measure_cord(cord_volume(fraction, spacing))
    assert result.summary["mscc_max_percent"] == pytest.approx(25.0, abs=2.0)  # AP 6 mm against 8 mm
    narrowed = [r["distance_from_top_mm"] for r in result.slices if r["slice"] in (19, 20)]
    assert min(narrowed) <= result.summary["mscc_max_distance_from_top_mm"] <= max(narrowed)


# --- inputs and outputs -----------------------------------------------------------------------------------------------
def test_reports_error_naming_the_file_when_no_cord_is_found():
    empty = cord_volume(np.zeros((5, 16, 16)), (1.0, 1.0, 1.0), source="/data/case7/cord_seg.nii.gz")
    with pytest.raises(CSpineInputError, match="no cord found") as error:
        measure_cord(empty)
    assert "/data/case7/cord_seg.nii.gz" in str(error.value)


def test_reports_error_when_a_soft_mask_is_not_a_fraction():
    with pytest.raises(CSpineInputError, match=r"\[0, 1\]"):
        measure_cord(cord_volume(np.full((4, 8, 8), 3.0), (1.0, 1.0, 1.0), source="prob.nii.gz"))


def test_outputs_are_a_csv_per_slice_a_csv_per_level_and_a_png(tmp_path):
    shape, spacing = (30, 32, 32), (0.5, 0.5, 1.5)
    fraction = cylinder_fraction(shape, spacing, (4.5, 3.5), supersample=2)
    labels = Volume(level_map(shape), spacing, (0.0, 0.0, 0.0), np.eye(3))
    written = write_outputs(measure_cord(cord_volume(fraction, spacing), levels=labels), tmp_path / "out")
    slices = written["slices"].read_text(encoding="utf-8").splitlines()
    assert slices[0].split(",") == list(SLICE_COLUMNS)
    assert len(slices) == 1 + 30
    assert written["levels"].read_text(encoding="utf-8").splitlines()[0].split(",") == list(LEVEL_COLUMNS)
    assert written["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written.values())


# --- the real case against the Spinal Cord Toolbox ----------------------------------------------------------------
@pytest.mark.real_data
def test_csa_of_the_real_manual_mask_matches_the_spinal_cord_toolbox(real_t1_dir):
    mask = read_volume(real_t1_dir / "t1w_seg-manual.nii.gz", allow_constant=True)
    corrected = measure_cord(mask)
    assert corrected.summary["slices"] == 77
    assert corrected.summary["csa_mean_mm2"] == pytest.approx(SCT_CSA_MEAN, rel=0.005)
    assert corrected.summary["csa_sd_mm2"] == pytest.approx(4.114482, rel=0.02)
    uncorrected = measure_cord(mask, angle_correction=False)
    assert uncorrected.summary["csa_mean_mm2"] == pytest.approx(SCT_AREA_MEAN, rel=0.005)
    polynomial = measure_cord(mask, centreline_fit="polyfit")
    assert polynomial.summary["csa_mean_mm2"] == pytest.approx(SCT_CSA_MEAN, rel=0.005)


# --- the command line ---------------------------------------------------------------------------------------------
def run_measure(argv: list[str]) -> int:
    """Run ``cspineai measure`` through its own parser (the full CLI also loads every other command)."""
    import argparse

    from cspineai.commands import measure

    parser = argparse.ArgumentParser()
    measure.register(parser.add_subparsers())
    args = parser.parse_args(["measure", *argv])
    return args.func(args)


def test_measure_command_writes_csv_and_png_from_mask_files(tmp_path, capsys):
    from cspineai.cli import COMMANDS
    from cspineai.io import write_volume

    assert "measure" in COMMANDS
    shape, spacing = (30, 32, 32), (0.5, 0.5, 1.5)
    cord = cylinder_fraction(shape, spacing, (4.5, 3.5), supersample=2)
    canal = cylinder_fraction(shape, spacing, (7.0, 7.0), supersample=2)
    grid = {"spacing": spacing, "origin": (0.0, 0.0, 0.0), "direction": np.eye(3)}
    write_volume(Volume((cord > 0.5).astype(np.uint8), **grid), tmp_path / "cord.nii.gz")
    write_volume(Volume(((canal > 0.5) & (cord <= 0.5)).astype(np.uint8), **grid), tmp_path / "csf.nii.gz")
    write_volume(Volume(level_map(shape), **grid), tmp_path / "levels.nii.gz")
    out = tmp_path / "results"
    argv = ["--cord", str(tmp_path / "cord.nii.gz"), "--csf", str(tmp_path / "csf.nii.gz")]
    assert run_measure([*argv, "--levels", str(tmp_path / "levels.nii.gz"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "morphometry_csa.png",
        "morphometry_levels.csv",
        "morphometry_slices.csv",
    ]
    printed = capsys.readouterr().out
    assert "30 slices" in printed and "C4" in printed and "SAC/CSA" in printed
    levels = (out / "morphometry_levels.csv").read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[0] for line in levels[1:]] == ["C3", "C4", "C5"]


def test_measure_command_reports_the_file_when_the_cord_mask_is_empty(tmp_path):
    from cspineai.io import write_volume

    path = write_volume(Volume(np.zeros((4, 8, 8), dtype=np.uint8)), tmp_path / "empty_cord.nii.gz")
    with pytest.raises(CSpineInputError, match="no cord found") as error:
        run_measure(["--cord", str(path), "--out", str(tmp_path / "out")])
    assert "empty_cord.nii.gz" in str(error.value)
    assert not (tmp_path / "out").exists()
