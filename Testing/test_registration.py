"""CT -> MRI registration API: header alignment, classical baseline, field conventions, input refusal.

The tests use an analytic cervical-spine phantom (vertebral bodies, discs, posterior elements, canal and cord) sampled
on a sagittal MRI grid and, through a known rigid + flexion transform, on an axial CT grid, so the true correspondence
of every point is known.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, optimize

from cspineai.errors import CSpineInputError, CSpineModelError
from cspineai.geometry import index_to_world, resample_like
from cspineai.metrics.registration import landmark_errors, warped_label_dice
from cspineai.registration import RegistrationResult, register
from cspineai.volume import Volume

LEVEL_CENTRES_Z = (-40.0, -20.0, 0.0, 20.0, 40.0)  # S coordinate (mm) of the five vertebral bodies
CT_VALUES = {0: -1000.0, 100: 40.0, 1: 35.0, 2: 10.0, "body": 700.0, "disc": 90.0, "posterior": 900.0}
MRI_VALUES = {0: 0.0, 100: 300.0, 1: 250.0, 2: 60.0, "body": 450.0, "disc": 160.0, "posterior": 120.0}


def phantom_labels(points: np.ndarray) -> np.ndarray:
    """Label of LPS points ``(..., 3)``: 0 air, 100 soft tissue, 1 cord, 2 CSF, 3+ bodies, 10+ discs, 16+ posterior."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    labels = np.zeros(points.shape[:-1], dtype=np.int16)
    # The neck widens towards the shoulders and the vertebrae grow caudally, as in a real neck: without such height cues
    # a stack of identical levels lets intensity-based registration slide along the spine.
    widening = ((60.0 - z) / 120.0) ** 2
    labels[(x / (30.0 + 15.0 * widening)) ** 2 + ((y - 5.0) / (38.0 + 6.0 * widening)) ** 2 <= 1.0] = 100
    labels[x**2 + (y + 27.0) ** 2 <= 5.0**2] = 0  # airway
    canal_r2 = x**2 + (y - 10.0) ** 2
    for n, zc in enumerate(LEVEL_CENTRES_Z):
        half_width = 8.0 + 0.8 * n
        in_body_column = (x / half_width) ** 2 + ((y + 6.0) / (7.0 + 0.4 * n)) ** 2 <= 1.0
        labels[in_body_column & (np.abs(z - zc) <= 7.0)] = 3 + n
        labels[in_body_column & (np.abs(z - zc - 10.0) <= 3.0)] = 10 + n
        ring = (canal_r2 > 6.0**2) & (canal_r2 <= 10.0**2) & (y > 4.0) & (np.abs(z - zc) <= 6.0)
        spinous = (np.abs(x) <= 2.5) & (y > 4.0) & (y <= 22.0 + 2.0 * n) & (np.abs(z - zc + 2.0) <= 3.0)
        labels[ring | spinous] = 16 + n
    labels[canal_r2 <= 6.0**2] = 2
    labels[(x / 4.0) ** 2 + ((y - 10.0) / 3.0) ** 2 <= 1.0] = 1
    return labels


def intensities(labels: np.ndarray, values: dict) -> np.ndarray:
    out = np.full(labels.shape, values[0], dtype=np.float32)
    for label in (100, 1, 2):
        out[labels == label] = values[label]
    out[(labels >= 3) & (labels < 10)] = values["body"]
    out[(labels >= 10) & (labels < 16)] = values["disc"]
    out[labels >= 16] = values["posterior"]
    return out


def grid_points(volume: Volume) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij")
    return index_to_world(volume, np.stack([i, j, k], axis=-1).astype(float))


def rigid_flexion(points: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """CT point -> MRI (phantom) point: a sagittal bend (AP shift growing as height squared), then a rigid move."""
    bent = points.copy()
    bent[..., 1] += strength * 6.0 * (points[..., 2] / 60.0) ** 2
    a, b = np.radians(4.0 * strength), np.radians(2.0 * strength)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return bent @ (rz @ rx).T + strength * np.array([2.0, -3.0, 4.0])


def make_pair(strength: float = 1.0, seed: int = 0) -> dict:
    """Sagittal MRI and axial CT of the phantom, the CT moved by :func:`rigid_flexion`, with labels and landmarks."""
    rng = np.random.default_rng(seed)
    pil = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: i -> P, j -> I, k -> L
    mri = Volume(np.zeros((21, 80, 64), np.float32), (1.5, 1.5, 3.0), (-30.0, -45.0, 60.0), pil, "T1_sag", "mri")
    # The CT covers more of the neck than the MRI, as in practice, so their overlap does not change while aligning.
    ct = Volume(np.zeros((73, 72, 54), np.float32), (1.5, 1.5, 2.0), (-40.0, -52.0, -72.0), np.eye(3), "CT_bone", "ct")

    mri_labels = phantom_labels(grid_points(mri))
    ct_labels = phantom_labels(rigid_flexion(grid_points(ct), strength))
    blurred = []
    for labels, values, grid in ((mri_labels, MRI_VALUES, mri), (ct_labels, CT_VALUES, ct)):
        sigma = [1.0 / s for s in grid.spacing[::-1]]  # 1 mm blur, per array axis (k, j, i)
        image = ndimage.gaussian_filter(intensities(labels, values), sigma)
        blurred.append(image + rng.normal(0, 0.02 * np.ptp(image), image.shape).astype(np.float32))

    mri_points = np.array([[0.0, -6.0, zc] for zc in LEVEL_CENTRES_Z])
    ct_points = np.array(
        [optimize.fsolve(lambda y, p=p: rigid_flexion(y, strength) - p, p, xtol=1e-10) for p in mri_points]
    )
    return {
        "mri": mri.with_array(blurred[0]),
        "ct": ct.with_array(blurred[1]),
        "mri_labels": mri.with_array(mri_labels),
        "ct_labels": ct.with_array(ct_labels),
        "mri_points": mri_points,
        "ct_points": ct_points,
    }


@pytest.fixture(scope="module")
def pair() -> dict:
    return make_pair()


def evaluate(result: RegistrationResult, pair: dict) -> tuple[float, float]:
    """Mean landmark error (mm) and mean vertebral-body Dice of a result on the phantom pair."""
    errors = landmark_errors(result.map_points(pair["mri_points"]), pair["ct_points"])
    warped = resample_like(pair["ct_labels"], pair["mri"], "nearest", transform=result.to_sitk_transform())
    return float(errors.mean()), warped_label_dice(warped.array, pair["mri_labels"].array, labels=range(3, 8))


def test_identity_keeps_the_ct_on_the_header_alignment(pair):
    result = register(pair["ct"], pair["mri"], method="identity")
    expected = resample_like(pair["ct"], pair["mri"], default_value=float(pair["ct"].array.min()))
    assert result.displacement_ras.shape == (*pair["mri"].shape, 3)
    assert not result.displacement_ras.any()
    np.testing.assert_array_equal(result.warped_ct.array, expected.array)
    assert result.folding_percent == 0.0 and result.sd_log_jacobian == 0.0


def test_phantom_misalignment_is_several_millimetres_at_header_alignment(pair):
    error, dice = evaluate(register(pair["ct"], pair["mri"], method="identity"), pair)
    assert error > 4.0 and dice < 0.7  # guards the recovery test below against an easy phantom


@pytest.mark.slow
def test_bspline_baseline_recovers_a_known_rigid_and_flexion_misalignment(pair):
    before, dice_before = evaluate(register(pair["ct"], pair["mri"], method="identity"), pair)
    result = register(pair["ct"], pair["mri"], method="bspline")
    after, dice_after = evaluate(result, pair)
    assert after <= 0.3 * before, (before, after)
    assert dice_after > dice_before
    assert result.folding_percent < 0.5


def test_displacement_is_stored_in_ras_and_maps_mri_points_to_ct_points(pair):
    shift_lps = np.array([3.0, -2.0, 5.0])
    field_ras = np.broadcast_to(shift_lps * [-1, -1, 1], (*pair["mri"].shape, 3)).astype(np.float32)
    result = RegistrationResult(field_ras, pair["mri"], pair["mri"], 0.0, 0.0, 0.0, "test")
    np.testing.assert_allclose(result.displacement_lps[0, 0, 0], shift_lps)
    mapped = result.map_points(pair["mri_points"])
    np.testing.assert_allclose(mapped, pair["mri_points"] + shift_lps, atol=1e-6)


def test_refuses_ct_and_mri_without_physical_overlap(pair):
    far_ct = Volume(pair["ct"].array, pair["ct"].spacing, (400.0, 400.0, 900.0), np.eye(3), "CT_bone", "ct_elsewhere")
    with pytest.raises(CSpineInputError, match="do not cover the same region") as caught:
        register(far_ct, pair["mri"], method="identity")
    assert "ct_elsewhere" in str(caught.value) and "mri" in str(caught.value)


def test_refuses_a_volume_that_is_not_three_dimensional(pair):
    flat = Volume(pair["ct"].array[:1], pair["ct"].spacing, pair["ct"].origin, np.eye(3), "CT_bone", "one_slice")
    with pytest.raises(CSpineInputError, match="3-D volume"):
        register(flat, pair["mri"], method="identity")


def test_fpran_without_a_model_names_the_missing_registry_entry(pair, monkeypatch, tmp_path):
    from cspineai.models import registry

    monkeypatch.setenv("CSPINEAI_USER_MODELS", str(tmp_path / "user"))  # empty user and shipped registries
    monkeypatch.setattr(registry, "shipped_dir", lambda: tmp_path / "shipped")
    with pytest.raises(CSpineModelError, match="fpran-registration"):
        register(pair["ct"], pair["mri"], method="fpran")


def test_rejects_an_unknown_method(pair):
    with pytest.raises(ValueError, match="method must be one of"):
        register(pair["ct"], pair["mri"], method="demons")


# --- the benchmark ---------------------------------------------------------------------------------------------------
def test_benchmark_scores_the_generators_displacement_as_the_ceiling(tmp_path, capsys):
    from cspineai.phantom import generate_cohort
    from helpers import load_script

    manifest = generate_cohort(1, tmp_path / "cohort", seed=77, resolution="coarse")
    split = manifest.read_text().splitlines()[1].split(",")[3]
    bench = load_script("benchmarks/bench_registration.py")
    out = tmp_path / "registration.md"
    assert bench.main(["--manifest", str(manifest), "--split", split, "--n", "1", "--no-bspline", "--threads", "1",
                       "--out", str(out)]) == 0
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line}
    truth, identity = rows["truth (generator's displacement)"], rows["identity (headers)"]
    assert float(truth[1]) < 0.05  # landmark mean (mm): the truth maps every landmark onto its CT position
    assert float(truth[0]) > 0.8 and float(truth[0]) > float(identity[0])  # vertebra Dice: resampling costs a little
    assert float(truth[1]) < float(identity[1])
    assert "truth (generator's displacement)" in out.read_text()
