"""The synthetic cohort: physics (HU, MRI contrast), anatomy (cord CSA), geometry, true registration, outcome, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from cspineai.errors import CSpineInputError
from cspineai.geometry import index_to_world, same_grid, world_to_index
from cspineai.manifest import read_manifest
from cspineai.phantom import generate_case, generate_cohort, sample_parameters, write_case
from cspineai.phantom import outcome as rule
from cspineai.phantom.anatomy import T
from cspineai.phantom.cohort import read_displacement
from cspineai.series import BODY_VALUES, CORD, DISC_LEVELS, LABELS, SERIES, VERTEBRAL_LEVELS

COMPRESSED_SEED = 20  # a case whose worst level (C5-C6) flattens the cord by more than 40% (checked below)


@pytest.fixture(scope="module")
def coarse_case():
    return generate_case(5, resolution="coarse", threads=1)


@pytest.fixture(scope="module")
def compressed_case():
    """One case at the default resolution, with a compressed cord."""
    return generate_case(COMPRESSED_SEED, threads=1)


def _interior(tissue: np.ndarray, name: str) -> np.ndarray:
    """Voxels of a tissue away from its in-plane border, so partial volume does not blur the check."""
    return ndimage.binary_erosion(tissue == T[name], np.ones((1, 3, 3), dtype=bool))


def _median(volume, mask) -> float:
    assert mask.sum() > 20, "too few voxels of this tissue to test"
    return float(np.median(volume.array[mask]))


def _sample(field: np.ndarray, volume, points_lps: np.ndarray) -> np.ndarray:
    """Trilinear sample of a ``(K, J, I, 3)`` field at LPS points."""
    ijk = world_to_index(volume, points_lps)
    coords = ijk[:, ::-1].T  # (k, j, i)
    return np.stack([ndimage.map_coordinates(field[..., c], coords, order=1) for c in range(3)], axis=-1)


# --- CT -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tissue", "low", "high"),
    [("air", -1024, -900), ("fat", -130, -70), ("muscle", 30, 70), ("csf", -5, 25), ("cord", 20, 55),
     ("cancellous_bone", 120, 450), ("disc_annulus", 60, 130)],
)
def test_ct_soft_kernel_gives_each_tissue_its_hounsfield_range(coarse_case, tissue, low, high):
    hu = _median(coarse_case.series["CT_tissue"], _interior(coarse_case.tissues["CT"], tissue))
    assert low <= hu <= high, f"{tissue}: median {hu} HU outside [{low}, {high}]"


def test_ct_bone_kernel_shows_cortical_bone_brighter_than_700_hu(coarse_case):
    cortex = coarse_case.tissues["CT"] == T["cortical_bone"]
    assert np.percentile(coarse_case.series["CT_bone"].array[cortex], 75) > 700


def test_ct_bone_kernel_is_sharper_and_noisier_than_soft_kernel(coarse_case):
    fat = _interior(coarse_case.tissues["CT"], "fat")
    assert coarse_case.series["CT_bone"].array[fat].std() > 2 * coarse_case.series["CT_tissue"].array[fat].std()


# --- MRI ------------------------------------------------------------------------------------------------------------
def test_t2_shows_csf_brighter_than_cord_brighter_than_muscle(coarse_case):
    t2, tissue = coarse_case.series["T2_sag"], coarse_case.tissues["SAG"]
    csf, cord, muscle = (_median(t2, _interior(tissue, n)) for n in ("csf", "cord", "muscle"))
    assert csf > 1.5 * cord > 1.5 * muscle


def test_t1_shows_fat_brighter_than_muscle_and_csf_darker_than_cord(coarse_case):
    t1, tissue = coarse_case.series["T1_sag"], coarse_case.tissues["SAG"]
    fat, muscle, csf, cord = (_median(t1, _interior(tissue, n)) for n in ("fat", "muscle", "csf", "cord"))
    assert fat > 1.5 * muscle
    assert csf < 0.8 * cord


def test_axial_t2_shows_csf_brighter_than_cord(coarse_case):
    t2, tissue = coarse_case.series["T2_tra"], coarse_case.tissues["T2_tra"]
    assert _median(t2, tissue == T["csf"]) > _median(t2, tissue == T["cord"])


def test_mri_background_follows_rician_noise_not_zero(coarse_case):
    air = coarse_case.series["T1_sag"].array[coarse_case.tissues["SAG"] == T["air"]]
    assert air.min() >= 0 and 0 < air.mean() < 0.15 * coarse_case.series["T1_sag"].array.max()


# --- anatomy --------------------------------------------------------------------------------------------------------
def test_healthy_cord_area_lies_between_60_and_90_mm2_across_patients():
    areas = []
    for seed in range(40):
        levels = sample_parameters(seed)["patient"].findings["levels"]
        # C2-C3 .. C6-C7: the cervical cord (at C7-T1 the cord tapers towards its thoracic size, about 55-65 mm2).
        areas += [levels[n]["cord_area_mm2"] for n in DISC_LEVELS[:-1] if levels[n]["cord_compression_ratio"] == 1.0]
    assert len(areas) > 40
    assert 60.0 <= min(areas) and max(areas) <= 90.0


def test_rendered_cord_area_is_healthy_away_from_compression_and_reduced_at_the_compressed_level(compressed_case):
    case = compressed_case
    levels = case.findings["levels"]
    worst = min(levels, key=lambda name: levels[name]["cord_compression_ratio"])
    assert levels[worst]["cord_compression_ratio"] < 0.6
    labels = case.labels["CT_bone"]
    cord = labels.array == CORD
    pixel = labels.spacing[0] * labels.spacing[1]
    ks = np.nonzero(cord.sum(axis=(1, 2)) > 0)[0]
    centroids = np.array([index_to_world(labels, np.r_[np.argwhere(cord[k]).mean(0)[::-1], k]) for k in ks])
    tangent = np.gradient(centroids, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    area = cord[ks].sum(axis=(1, 2)) * pixel * np.abs(tangent[:, 2])  # angle-corrected CSA per slice
    disc_z = {name: case.landmarks["CT"][name][2] for name in DISC_LEVELS}
    z = centroids[:, 2]
    at_worst = area[np.abs(z - disc_z[worst]) < 2.5]
    healthy_levels = [n for n in DISC_LEVELS[:-1] if levels[n]["cord_compression_ratio"] == 1.0]
    healthy = np.concatenate([area[np.abs(z - disc_z[n]) < 2.5] for n in healthy_levels]) if healthy_levels else None
    if healthy is not None and len(healthy):
        assert 60.0 <= np.median(healthy) <= 90.0
        assert at_worst.min() < 0.8 * np.median(healthy)
    assert at_worst.min() < 0.8 * levels[worst]["cord_area_mm2"] / levels[worst]["cord_compression_ratio"] ** 0.5


def test_vertebral_body_labels_sit_on_their_landmarks_in_every_series(coarse_case):
    for name in SERIES:
        labels = coarse_case.labels[name]
        space = "CT" if name.startswith("CT") else "MRI"
        hits = 0
        for level in VERTEBRAL_LEVELS:
            ijk = np.round(world_to_index(labels, np.array(coarse_case.landmarks[space][level]))).astype(int)
            if np.all(ijk >= 0) and np.all(ijk < np.array(labels.size_ijk)):
                assert labels.array[ijk[2], ijk[1], ijk[0]] == BODY_VALUES[level], f"{name} {level}"
                hits += 1
        assert hits >= 3, f"{name}: too few landmarks inside the field of view"


def test_label_maps_use_only_the_project_label_values(coarse_case):
    allowed = {0} | {label.value for label in LABELS}
    for volume in coarse_case.labels.values():
        assert volume.array.dtype == np.uint8
        assert set(np.unique(volume.array)) <= allowed


# --- geometry -------------------------------------------------------------------------------------------------------
def test_every_series_has_its_plane_and_slice_thickness(compressed_case):
    protocol = compressed_case.protocol
    expected = {"CT_bone": ("axial", protocol["ct_slice_mm"]), "CT_tissue": ("axial", protocol["ct_slice_mm"]),
                "T1_sag": ("sagittal", protocol["sag_slice_mm"]), "T2_sag": ("sagittal", protocol["sag_slice_mm"]),
                "T2_tra": ("axial", protocol["tra_slice_mm"])}
    for name, (plane, thickness) in expected.items():
        volume = compressed_case.series[name]
        assert volume.plane == plane, name
        assert volume.spacing[2] == pytest.approx(thickness), name
        assert same_grid(volume, compressed_case.labels[name]) and same_grid(volume, compressed_case.causal_mask[name])
    assert same_grid(compressed_case.series["T1_sag"], compressed_case.series["T2_sag"])
    assert 0.3 <= compressed_case.series["CT_bone"].spacing[0] <= 0.6
    assert 3.0 <= compressed_case.series["T1_sag"].spacing[2] <= 4.0
    assert 3.0 <= compressed_case.series["T2_tra"].spacing[2] <= 5.0


def test_displacement_maps_mri_landmarks_onto_ct_landmarks_within_half_a_millimetre(coarse_case):
    mri = np.array([coarse_case.landmarks["MRI"][k] for k in coarse_case.landmarks["MRI"]])
    ct = np.array([coarse_case.landmarks["CT"][k] for k in coarse_case.landmarks["MRI"]])
    reference = coarse_case.series["T1_sag"]
    inside = np.all((world_to_index(reference, mri) >= 0) & (world_to_index(reference, mri) <= np.array(
        reference.size_ijk) - 1), axis=1)
    assert inside.sum() >= 10
    mapped = mri[inside] + _sample(coarse_case.displacement, reference, mri[inside])
    error = np.linalg.norm(mapped - ct[inside], axis=1)
    assert error.max() < 0.5, error
    # The sessions really differ: without the field the landmarks would be far apart.
    assert np.linalg.norm(mri - ct, axis=1).mean() > 5.0


def test_displacement_file_read_back_through_simpleitk_maps_landmarks_onto_ct(coarse_case, tmp_path):
    import SimpleITK as sitk

    write_case(coarse_case, tmp_path / "case")
    field, grid = read_displacement(tmp_path / "case" / "displacement.nii.gz")
    assert same_grid(grid, coarse_case.series["T1_sag"])
    image = sitk.ReadImage(str(tmp_path / "case" / "displacement.nii.gz"), sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(image)
    errors = []
    for name, point in coarse_case.landmarks["MRI"].items():
        ijk = world_to_index(grid, np.array(point))
        if np.all(ijk >= 1) and np.all(ijk <= np.array(grid.size_ijk) - 2):
            errors.append(np.linalg.norm(np.array(transform.TransformPoint(point)) - coarse_case.landmarks["CT"][name]))
    assert len(errors) >= 10 and max(errors) < 0.5


def test_mri_and_ct_sessions_differ_by_neck_flexion_not_only_a_rigid_shift(coarse_case):
    ct = np.array([coarse_case.landmarks["CT"][k] for k in VERTEBRAL_LEVELS])
    mri = np.array([coarse_case.landmarks["MRI"][k] for k in VERTEBRAL_LEVELS])
    # Best rigid fit (Kabsch) of MRI onto CT landmarks leaves a residual when the neck bent between sessions.
    a, b = mri - mri.mean(0), ct - ct.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    r = (u @ np.diag([1, 1, np.sign(np.linalg.det(u @ vt))]) @ vt).T
    residual = np.linalg.norm(a @ r.T - b, axis=1).max()
    flexion = abs(coarse_case.pose["mri_flexion_deg"])
    assert residual > 0.05 * flexion


def test_interpolated_pose_matches_the_exact_pose_within_five_hundredths_of_a_millimetre(coarse_case):
    from cspineai.phantom import pose as pose_module
    from cspineai.phantom.acquire import Grid, ReferenceMapper
    from cspineai.phantom.generator import SAGITTAL_DIRECTION

    params = sample_parameters(5)
    patient = params["patient"]
    _, mri, _ = pose_module.sample_poses(params["rngs"]["pose"], patient)
    grid = Grid.centred(mri.centres[4], SAGITTAL_DIRECTION, (0.8, 0.8, 3.5), (120.0, 150.0, 35.0))
    k = np.linspace(-0.4, grid.size[2] - 0.6, 21)
    x, y, z = ReferenceMapper(grid, mri, k)(k)
    approx = np.stack([x, y, z], -1).reshape(-1, 3)
    exact = mri.to_reference(np.stack([c.reshape(-1) for c in np.broadcast_arrays(*[grid.points(k)[..., c] for c in
                                                                                     range(3)])], -1))
    assert np.abs(approx - exact).max() < 0.05


# --- outcome, determinism, files ------------------------------------------------------------------------------------
def test_cohort_labels_have_the_documented_prevalence_and_bayes_accuracy():
    estimate = rule.bayes_accuracy(n=1500, seed=3)
    assert abs(estimate["prevalence"] - rule.PREVALENCE) < 4 * estimate["prevalence_se"] + 0.01
    assert 0.85 <= estimate["bayes_accuracy"] <= 0.90
    labels = [sample_parameters(seed)["label"] for seed in range(1000, 1600)]
    se = np.sqrt(rule.PREVALENCE * (1 - rule.PREVALENCE) / len(labels))
    assert abs(np.mean(labels) - rule.PREVALENCE) < 4 * se


def test_image_only_probability_is_the_rule_averaged_over_the_clinical_table():
    """E[q | findings] over patients equals the prevalence (total expectation), and knowing only the images is worth
    less than knowing the whole rule: the image-only Bayes accuracy is below the full one on the same patients."""
    patients = [sample_parameters(seed) for seed in range(2000, 2120)]
    p = np.array([d["probability"] for d in patients])
    q = np.array([rule.image_only_probability(d["patient"].findings, draws=150, seed=n)
                  for n, d in enumerate(patients)])
    assert abs(q.mean() - p.mean()) < 0.03
    assert np.corrcoef(p, q)[0, 1] > 0.8
    assert np.maximum(q, 1 - q).mean() < np.maximum(p, 1 - p).mean()


def test_causal_mask_marks_the_findings_that_raised_the_pain_logit(coarse_case):
    causes = coarse_case.findings["causes"]
    has_mask = any(m.array.any() for m in coarse_case.causal_mask.values())
    assert has_mask == bool(causes)
    for key in causes:
        term = rule.rule_terms(coarse_case.findings, coarse_case.clinical)[key]
        assert rule.RULE_SCALE * term >= rule.CAUSAL_MIN_LOGIT


def test_same_seed_gives_identical_files(coarse_case, tmp_path):
    # The module's case was made on one thread; this one on two: threading must not change a single byte.
    a = write_case(coarse_case, tmp_path / "a")
    b = write_case(generate_case(5, resolution="coarse", threads=2), tmp_path / "b")
    assert set(a) == set(b)
    for column in a:
        assert a[column].read_bytes() == b[column].read_bytes(), column
    assert sample_parameters(5)["patient"].findings != sample_parameters(6)["patient"].findings


def test_randomized_case_keeps_geometry_labels_and_outcome_of_its_seed():
    physical = sample_parameters(9)
    case = generate_case(9, randomize=True, resolution="coarse", threads=1)
    assert case.label == physical["label"]
    assert case.series["T1_sag"].plane == "sagittal" and case.series["T2_tra"].plane == "axial"
    assert same_grid(case.series["T1_sag"], case.series["T2_sag"])
    labels = case.labels["T1_sag"]
    level = "C4"
    ijk = np.round(world_to_index(labels, np.array(case.landmarks["MRI"][level]))).astype(int)
    assert labels.array[ijk[2], ijk[1], ijk[0]] == BODY_VALUES[level]
    assert case.protocol["random_intensity"] is not None


def test_randomised_sagittal_slices_follow_the_preset_and_thick_draws_keep_their_old_slice_counts():
    from cspineai.phantom.protocol import preset
    from cspineai.phantom.randomize import randomized_protocol

    rng = np.random.default_rng(0)
    for _ in range(200):
        thick = randomized_protocol(rng, preset("default"))
        assert 2.5 <= thick.sag_slice_mm <= 5.0
        # the rule every earlier cohort was generated with (its files must stay reproducible)
        assert thick.sag_slices == int(np.clip(round(48.0 / thick.sag_slice_mm), 9, 19))
        thin = randomized_protocol(rng, preset("thin"))
        assert 0.8 <= thin.sag_slice_mm <= 1.5
        assert abs(thin.sag_slices * thin.sag_slice_mm - 48.0) <= thin.sag_slice_mm


def test_varied_cord_changes_cord_and_csf_but_not_the_bones_nor_the_standard_phantom():
    from cspineai.phantom.anatomy import canal_layout

    seeds = range(30, 60)
    ratios, margins = [], []
    for seed in seeds:
        standard, varied = sample_parameters(seed)["patient"], sample_parameters(seed, vary_cord=True)["patient"]
        assert "cord_variation" not in standard.findings  # the standard phantom (every earlier cohort) is unchanged
        assert varied.findings["cord_variation"]["cord_lr_factor"] == pytest.approx(varied.cord_lr_factor, abs=1e-4)
        s = np.float32([standard.disc_s[2]])
        a, b = canal_layout(standard, s), canal_layout(varied, s)
        assert b["canal_half_width"] == pytest.approx(a["canal_half_width"])  # the bones stay
        ratios.append(float(b["cord_a0"][0] / a["cord_a0"][0]))
        margins.append(float(b["sac_half_width"][0] - b["cord_a0"][0]))
    assert min(ratios) < 0.8 and max(ratios) > 1.05  # cords both narrower and wider than the standard one
    assert min(margins) < 3.0 and max(margins) > 5.5  # CSF beside the cord both thinner and wider than 3.6 mm
    assert sample_parameters(31, vary_cord=True)["patient"].findings == sample_parameters(31, vary_cord=True)[
        "patient"].findings  # still one case per seed


def test_varied_cord_is_what_the_labels_show():
    standard = generate_case(4, resolution="coarse", threads=1)
    varied = generate_case(4, resolution="coarse", threads=1, vary_cord=True)
    factor = varied.findings["cord_variation"]
    cord = [np.count_nonzero(case.labels["T1_sag"].array == CORD) for case in (standard, varied)]
    # the cord's cross-section scales with both factors (compression aside): its voxel count follows
    assert cord[1] / cord[0] == pytest.approx(factor["cord_lr_factor"] * factor["cord_ap_factor"], rel=0.15)
    np.testing.assert_array_equal(standard.labels["CT_bone"].array == BODY_VALUES["C4"],
                                  varied.labels["CT_bone"].array == BODY_VALUES["C4"])


def test_thin_preset_acquires_the_sagittal_series_as_1_mm_slices():
    case = generate_case(3, resolution="thin", threads=1)
    for series in ("T1_sag", "T2_sag"):
        volume = case.series[series]
        assert volume.shape[0] == 48 and volume.spacing[2] == pytest.approx(1.0)
        assert np.count_nonzero(case.labels[series].array == 1) > 0


def test_cohort_writes_a_manifest_that_reads_back_with_folds_and_split(tmp_path):
    manifest = generate_cohort(3, tmp_path / "cohort", seed=4, resolution="coarse", workers=1)
    cases = read_manifest(manifest, require=("label", "fold", "T1_sag", "CT_bone", "displacement", "causal_mask"))
    assert len(cases) == 3
    assert sum(case.split == "test" for case in cases) == 1
    assert {case.fold for case in cases} <= set(range(5))
    assert all(case.fields["age"] for case in cases)
    clinical = json.loads(cases[0].path("clinical").read_text(encoding="utf-8"))
    assert clinical["label"] == cases[0].label and "findings" in clinical


def test_cohort_split_mirrors_the_papers_200_50_split_stratified_by_label():
    from cspineai.phantom.cohort import stratified_assignment

    labels = [int(sample_parameters(seed)["label"]) for seed in range(250)]
    folds, split = stratified_assignment(labels, seed=0)
    test = [label for label, part in zip(labels, split, strict=True) if part == "test"]
    assert len(test) == 50
    assert abs(np.mean(test) - np.mean(labels)) < 0.03
    for fold in range(5):
        members = [label for label, f in zip(labels, folds, strict=True) if f == fold]
        assert abs(len(members) - 50) <= 1 and abs(np.mean(members) - np.mean(labels)) < 0.03


def test_cohort_refuses_zero_cases(tmp_path):
    with pytest.raises(CSpineInputError, match="at least 1"):
        generate_cohort(0, tmp_path, seed=0)


def test_command_line_writes_a_cohort(tmp_path):
    from cspineai.cli import main

    assert main(["phantom", "--n", "1", "--out", str(tmp_path / "c"), "--seed", "2", "--resolution", "coarse"]) == 0
    assert len(read_manifest(tmp_path / "c" / "manifest.csv")) == 1
    assert main(["phantom", "--n", "1", "--out", str(tmp_path / "v"), "--seed", "2", "--resolution", "coarse",
                 "--vary-cord"]) == 0
    (case,) = read_manifest(tmp_path / "v" / "manifest.csv")
    assert "cord_variation" in json.loads(case.paths["clinical"].read_text())["findings"]


def test_command_line_offers_every_protocol_preset():
    from cspineai.commands.phantom import RESOLUTIONS
    from cspineai.phantom.protocol import PRESETS

    assert RESOLUTIONS == tuple(sorted(PRESETS))


def test_radiograph_shows_bone_brighter_than_soft_tissue(coarse_case):
    film = coarse_case.radiograph
    assert film.ndim == 2 and 0.0 <= film.min() and film.max() <= 1.0
    assert np.percentile(film, 99) - np.percentile(film, 5) > 0.3


@pytest.mark.real_data
def test_phantom_cord_size_and_t1_contrast_are_close_to_the_real_scan(real_t1_dir):
    from cspineai.io import read_volume
    from cspineai.phantom.acquire import fse_signal
    from cspineai.phantom.anatomy import TISSUES

    image = read_volume(real_t1_dir / "t1w.nii.gz").array.astype(float)
    mask = read_volume(real_t1_dir / "t1w_seg-manual.nii.gz", allow_constant=True).array > 0
    real_area = mask.sum(axis=(1, 2))[mask.sum(axis=(1, 2)) > 0].mean()  # 1 mm iso: voxels per slice = mm2
    areas = []
    for seed in range(40):
        levels = sample_parameters(seed)["patient"].findings["levels"]
        areas += [levels[n]["cord_area_mm2"] for n in DISC_LEVELS[:-1] if levels[n]["cord_compression_ratio"] == 1.0]
    assert abs(np.mean(areas) - real_area) < 0.15 * real_area
    ring = ndimage.binary_dilation(mask, np.ones((1, 5, 5))) & ~ndimage.binary_dilation(mask, np.ones((1, 3, 3)))
    real_ratio = np.median(image[ring]) / np.median(image[mask])  # CSF around the cord / cord on T1
    t1 = fse_signal(550.0, 12.0)
    phantom_ratio = t1[TISSUES.index("csf")] / t1[TISSUES.index("cord")]
    assert abs(phantom_ratio - real_ratio) < 0.15
