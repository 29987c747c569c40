"""Saliency maps (cspineai.saliency) and their faithfulness metrics (cspineai.metrics.saliency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cspineai.errors import CSpineInputError, CSpineModelError
from cspineai.geometry import same_grid
from cspineai.metrics.saliency import blurred_baseline, deletion_curve, deletion_order, pointing_game, random_order
from cspineai.nn.classifier import build_classifier
from cspineai.preprocess import prepare_case, working_grid
from cspineai.saliency import (
    BranchAsInput,
    feature_upsampler,
    gradcam,
    integrated_gradients,
    occlusion,
    saliency_maps,
    to_series_grid,
    working_saliency,
)
from cspineai.volume import Volume
from helpers import DIRECTIONS, load_script

REPO = Path(__file__).resolve().parents[1]


def tiny_classifier(sizes: dict | None = None, seed: int = 0, variant: str = "conv"):
    torch.manual_seed(seed)
    config = {"series": ["T1_sag", "CT_bone"], "variant": variant, "widths": [2, 4, 4, 4]}
    if sizes:
        config["input_sizes"] = sizes
    return build_classifier(config).eval()


def series_volume(kind: str, shape, spacing, seed: int = 0, ct: bool = False) -> Volume:
    """A smooth random volume (so that the classifier sees structure) with one of the test directions."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    array = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    array = (array / np.abs(array).max() * (1000 if ct else 400) + (0 if ct else 500)).astype(np.int16)
    return Volume(array, spacing, (-40.0, 25.0, 80.0), DIRECTIONS[kind])


@pytest.fixture(scope="module")
def case_series() -> dict[str, Volume]:
    return {"T1_sag": series_volume("sagittal", (14, 150, 140), (1.1, 1.0, 3.3), seed=1),
            "CT_bone": series_volume("oblique", (40, 100, 110), (0.9, 1.2, 3.0), seed=2, ct=True)}


# --- geometry --------------------------------------------------------------------------------------------------------
def test_upsampler_puts_feature_voxel_n_at_input_voxel_n_times_step():
    branch = tiny_classifier().branches["T1_sag"]
    cam = torch.zeros(1, 1, 2, 8, 8)
    cam[0, 0, 1, 3, 5] = 1.0
    up = feature_upsampler(branch)((16, 128, 128))(cam)
    assert up.shape == (1, 1, 16, 128, 128)
    assert np.unravel_index(int(up.argmax()), up.shape[2:]) == (8, 48, 80)
    assert up[0, 0, 8, 48, 80] == pytest.approx(1.0)
    # halfway between two feature centres the value is halved (linear), beyond the last centre the edge is kept
    assert up[0, 0, 8, 56, 80] == pytest.approx(0.5)
    assert up[0, 0, 15, 48, 80] == pytest.approx(1.0)


def test_upsampler_centres_vit_patches_on_their_middle():
    class Patches(torch.nn.Module):
        kind = "vit"

    cam = torch.zeros(1, 1, 4, 6, 6)
    cam[0, 0, 2, 1, 4] = 1.0
    up = feature_upsampler(Patches())((16, 96, 96))(cam)
    # patch n covers voxels [n * p, (n + 1) * p): its centre is n * p + (p - 1) / 2, between two voxels
    assert float(up[0, 0, 9, 23, 71]) == pytest.approx(float(up[0, 0, 10, 24, 72]), abs=1e-6)
    assert up[0, 0, 9:11, 23:25, 71:73].min() == up[0, 0].max()


@pytest.mark.parametrize("kind,series", [("sagittal", "T1_sag"), ("oblique", "CT_bone"), ("left_handed", "CT_bone")])
def test_working_grid_map_lands_on_the_same_physical_point_in_the_series(kind, series):
    original = series_volume(kind, (22, 120, 110), (1.1, 0.9, 3.3))
    grid = working_grid(original, series)
    kji = np.array(grid.shape) // 2 + np.array([1, -7, 9])
    k, j, i = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    blob = np.exp(-0.5 * (((k - kji[0]) / 1.5) ** 2 + ((j - kji[1]) / 3.0) ** 2 + ((i - kji[2]) / 3.0) ** 2))
    expected = grid.ijk_to_lps @ np.array([*kji[::-1], 1.0])

    mapped = to_series_grid(blob, grid, original)

    assert same_grid(mapped, original) and mapped.array.dtype == np.float32
    assert mapped.array.min() >= 0.0 and mapped.array.max() == pytest.approx(1.0)
    weights = mapped.array.astype(np.float64)
    idx = np.argwhere(weights > 0)
    w = weights[weights > 0]
    centroid_kji = (idx * w[:, None]).sum(axis=0) / w.sum()
    centroid = original.ijk_to_lps @ np.array([*centroid_kji[::-1], 1.0])
    assert np.linalg.norm(centroid[:3] - expected[:3]) < 0.5  # mm


def test_map_is_zero_outside_the_working_field_of_view():
    original = series_volume("sagittal", (30, 260, 250), (1.0, 1.0, 3.0))  # larger than the 160 mm working grid
    grid = working_grid(original, "T1_sag")
    mapped = to_series_grid(np.ones(grid.shape, np.float32), grid, original)
    assert mapped.array[0, 0, 0] == 0.0 and mapped.array[15, 130, 125] == 1.0


def test_rejects_a_map_that_does_not_match_the_working_grid():
    original = series_volume("sagittal", (14, 100, 100), (1.0, 1.0, 3.0))
    with pytest.raises(ValueError, match="does not match the working grid"):
        to_series_grid(np.zeros((3, 4, 5)), working_grid(original, "T1_sag"), original)


# --- maps of the real classifier -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_maps_come_back_on_each_input_series_grid_in_unit_range(case_series, method):
    model = tiny_classifier(variant="abpdc")
    options = {"steps": 2} if method == "integrated_gradients" else {}
    maps = saliency_maps(model, case_series, method, **options)
    assert set(maps) == {"T1_sag", "CT_bone"}
    for name, volume in maps.items():
        assert same_grid(volume, case_series[name])
        assert volume.array.dtype == np.float32
        assert volume.array.min() >= 0.0 and volume.array.max() <= 1.0
        assert volume.modality == "saliency"


def test_prepared_inputs_give_the_same_maps_as_volumes(case_series):
    model = tiny_classifier()
    from_volumes = saliency_maps(model, case_series)
    prepared = prepare_case(case_series, model.series)
    from_prepared = saliency_maps(model, prepared, references=case_series)
    on_working = saliency_maps(model, prepared)
    for name in model.series:
        np.testing.assert_allclose(from_prepared[name].array, from_volumes[name].array, atol=1e-6)
        assert same_grid(on_working[name], prepared[name].grid)


def test_volumes_are_prepared_on_the_grids_the_model_was_trained_on(case_series):
    # The shipped classifier reads coarser grids than the defaults: maps of the default grids would explain inputs
    # the model never saw (and that predict_pain does not give it).
    from cspineai.preprocess import model_grids

    model = tiny_classifier({"T1_sag": [8, 32, 32], "CT_bone": [8, 24, 24]})
    prepared = prepare_case(case_series, model.series, model_grids(model))
    assert {s: prepared[s].tensor.shape[1:] for s in model.series} == {"T1_sag": (8, 32, 32), "CT_bone": (8, 24, 24)}
    from_volumes = saliency_maps(model, case_series)
    from_prepared = saliency_maps(model, prepared, references=case_series)
    for name in model.series:
        np.testing.assert_allclose(from_volumes[name].array, from_prepared[name].array, atol=1e-6)


def test_gradcam_leaves_no_hooks_and_restores_training_mode():
    model = tiny_classifier({"T1_sag": [8, 32, 32], "CT_bone": [8, 32, 32]}).train()
    tensors = {s: torch.rand(1, 1, 8, 32, 32) for s in model.series}
    for _ in range(2):
        gradcam(model, tensors)
    for layer in model.target_layers().values():
        assert not layer._forward_hooks and not layer._backward_hooks
        assert "register_forward_hook" not in vars(layer)
    assert model.training


def test_integrated_gradients_add_up_to_the_change_of_the_logit():
    model = tiny_classifier({"T1_sag": [8, 32, 32], "CT_bone": [8, 32, 32]}, seed=3)
    torch.manual_seed(1)
    tensors = {s: torch.rand(1, 1, 8, 32, 32) for s in model.series}
    attributions = integrated_gradients(model, tensors, target_class=1, steps=64, batch_size=16)
    with torch.no_grad():
        change = model(tensors)[0, 1] - model({s: torch.zeros_like(t) for s, t in tensors.items()})[0, 1]
    total = sum(float(a.sum()) for a in attributions.values())
    assert total == pytest.approx(float(change), rel=0.05, abs=1e-3)


def test_integrated_gradients_of_a_case_start_from_its_blurred_copy(case_series):
    # The pipeline's integrated gradients explain the change from the case blurred by IG_BLUR_MM, not from zeros.
    from cspineai.preprocess import model_grids
    from cspineai.saliency import IG_BLUR_MM, blurred_baselines

    model = tiny_classifier({"T1_sag": [8, 32, 32], "CT_bone": [8, 24, 24]}, seed=3)
    prepared = prepare_case(case_series, model.series, model_grids(model))
    baselines = blurred_baselines(prepared)
    image = prepared["T1_sag"].tensor[0].numpy()
    np.testing.assert_allclose(baselines["T1_sag"][0, 0].numpy(),
                               blurred_baseline(image, prepared["T1_sag"].grid.spacing[::-1], IG_BLUR_MM), atol=1e-6)
    default = saliency_maps(model, prepared, "integrated_gradients", steps=4)
    blurred = saliency_maps(model, prepared, "integrated_gradients", steps=4, baselines=baselines)
    zeros = saliency_maps(model, prepared, "integrated_gradients", steps=4,
                          baselines={s: torch.zeros_like(b) for s, b in baselines.items()})
    for name in model.series:
        np.testing.assert_allclose(default[name].array, blurred[name].array, atol=1e-6)
        assert not np.allclose(default[name].array, zeros[name].array, atol=1e-3)


def test_integrated_gradients_maps_are_smoothed_in_millimetres_unless_told_not_to(case_series):
    from cspineai.preprocess import model_grids
    from cspineai.saliency import IG_SMOOTH_MM, default_smoothing, normalise

    model = tiny_classifier({"T1_sag": [8, 32, 32], "CT_bone": [8, 24, 24]}, seed=3)
    prepared = prepare_case(case_series, model.series, model_grids(model))
    smoothed = saliency_maps(model, prepared, "integrated_gradients", steps=4)  # on the working grids
    raw = saliency_maps(model, prepared, "integrated_gradients", steps=4, smooth_mm=0)
    for name in model.series:
        spacing = prepared[name].grid.spacing[::-1]
        expected = normalise(blurred_baseline(raw[name].array, spacing, IG_SMOOTH_MM))
        np.testing.assert_allclose(smoothed[name].array, expected, atol=1e-5)
        assert not np.allclose(smoothed[name].array, raw[name].array, atol=1e-2)
    assert default_smoothing("integrated_gradients") == IG_SMOOTH_MM
    assert default_smoothing("gradcam") == default_smoothing("occlusion") == 0.0
    tensors = {s: prepared[s].tensor[None] for s in model.series}
    with pytest.raises(ValueError, match="spacing of every series"):
        working_saliency(model, tensors, "integrated_gradients", smooth_mm=4.0, steps=2)


def test_branch_wrapper_feeds_the_branch_as_x_and_expands_the_other_series():
    model = tiny_classifier({"T1_sag": [8, 32, 32], "CT_bone": [8, 32, 32]})
    x, other = torch.rand(3, 1, 8, 32, 32), torch.rand(1, 1, 8, 32, 32)
    with torch.no_grad():
        wrapped = BranchAsInput(model, "T1_sag")(x, CT_bone=other)
        direct = model({"T1_sag": x, "CT_bone": other.expand(3, -1, -1, -1, -1)})
    torch.testing.assert_close(wrapped, direct)


def test_reports_unknown_method_missing_series_and_foreign_models():
    model = tiny_classifier({"T1_sag": [8, 32, 32], "CT_bone": [8, 32, 32]})
    tensors = {s: torch.rand(1, 1, 8, 32, 32) for s in model.series}
    with pytest.raises(ValueError, match="method must be one of"):
        working_saliency(model, tensors, "lime")
    with pytest.raises(ValueError, match="target_class"):
        working_saliency(model, tensors, target_class=2)
    with pytest.raises(CSpineInputError, match="CT_bone"):
        working_saliency(model, {"T1_sag": tensors["T1_sag"]})
    with pytest.raises(CSpineModelError, match="two-branch classifier"):
        working_saliency(torch.nn.Linear(2, 2), tensors)


# --- a model whose decision depends on a known region ------------------------------------------------------------
SAG, AX = (8, 64, 64), (4, 16, 16)


def blob_batch(n: int, generator: torch.Generator):
    """Half the cases carry a bright blob (sigma 1.5 x 4 x 4 voxels) at a random place of the sagittal input: the
    label. Returns inputs, labels, and per case the blob's region (within 2 sigma) as a boolean array."""
    zz, yy, xx = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in SAG), indexing="ij")
    sag, ax = 0.1 * torch.randn(n, 1, *SAG, generator=generator), 0.1 * torch.randn(n, 1, *AX, generator=generator)
    labels, regions = torch.arange(n) % 2, []
    for b in range(n):
        c = [int(torch.randint(lo, hi, (1,), generator=generator)) for lo, hi in ((2, 6), (10, 54), (10, 54))]
        r2 = ((zz - c[0]) / 1.5) ** 2 + ((yy - c[1]) / 4) ** 2 + ((xx - c[2]) / 4) ** 2
        if labels[b]:
            sag[b, 0] += torch.exp(-r2 / 2)
        regions.append((r2 <= 4).numpy())
    return {"T1_sag": sag, "CT_bone": ax}, labels, regions


@pytest.fixture(scope="module")
def blob_model():
    """The two-branch classifier (plain convolutions, widths 4..8) trained 40 steps to find the blob (~10 s)."""
    torch.manual_seed(0)
    model = build_classifier({"series": ["T1_sag", "CT_bone"], "variant": "conv", "widths": [4, 8, 8, 8],
                              "input_sizes": {"T1_sag": list(SAG), "CT_bone": list(AX)}})
    generator = torch.Generator().manual_seed(1)
    optimiser = torch.optim.AdamW(model.parameters(), 3e-3)
    for _ in range(40):
        x, y, _ = blob_batch(8, generator)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    # Forty steps leave batch norm's running averages behind the weights: re-estimate them before evaluating.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None
        for _ in range(4):
            model(blob_batch(16, generator)[0])
    model.eval()
    x, y, regions = blob_batch(16, generator)
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    assert (predicted == y).float().mean() >= 0.9, "the toy model did not learn the blob"
    positive = [b for b in range(16) if y[b]]
    return model, {k: v[positive] for k, v in x.items()}, [regions[b] for b in positive]


def test_gradcam_points_at_the_blob_the_model_depends_on(blob_model):
    model, x, regions = blob_model
    maps = working_saliency(model, x, "gradcam")["T1_sag"].numpy()
    results = [pointing_game(m, r, (1.0, 1.0, 1.0), margin_mm=10.0) for m, r in zip(maps, regions, strict=True)]
    # Grad-CAM's level-4 cells are 16 voxels apart; a random point lands within 10 mm of the blob about 1 time in 4.
    assert sum(r.hit for r in results) >= 6, [round(r.distance_mm, 1) for r in results]


def test_gradcam_on_a_finer_pyramid_level_points_at_the_blob_too(blob_model):
    model, x, regions = blob_model
    maps = working_saliency(model, x, "gradcam", level=3)["T1_sag"].numpy()
    assert maps.shape == (len(regions), *SAG) and maps.min() >= 0.0 and maps.max() <= 1.0
    results = [pointing_game(m, r, (1.0, 1.0, 1.0), margin_mm=10.0) for m, r in zip(maps, regions, strict=True)]
    assert sum(r.hit for r in results) >= 6, [round(r.distance_mm, 1) for r in results]
    # the level's own layer is hooked: its map differs from the last stage's
    assert not np.allclose(maps, working_saliency(model, x, "gradcam")["T1_sag"].numpy())


def test_gradcam_level_is_checked():
    model = tiny_classifier()
    assert model.target_layers(2)["T1_sag"] is model.branches["T1_sag"].stages[1]
    with pytest.raises(ValueError, match="level must be in 1..4"):
        model.target_layers(5)


def test_integrated_gradients_and_occlusion_point_at_the_blob(blob_model):
    model, x, regions = blob_model
    maps = working_saliency(model, x, "integrated_gradients", steps=8)["T1_sag"].numpy()
    assert all(pointing_game(m, r, (1.0, 1.0, 1.0), margin_mm=3.0).hit for m, r in zip(maps, regions, strict=True))
    single = {k: v[:1] for k, v in x.items()}
    occluded = occlusion(model, single, mask_size={"T1_sag": (4, 16, 16), "CT_bone": (2, 8, 8)}, overlap=0.0,
                         batch_size=64)
    assert pointing_game(occluded["T1_sag"][0, 0].numpy(), regions[0], (1.0, 1.0, 1.0), margin_mm=10.0).hit


def test_deleting_the_salient_voxels_first_drops_the_probability_faster_than_random(blob_model):
    from cspineai.saliency import class_probability

    model, x, _ = blob_model
    single = {k: v[:1] for k, v in x.items()}
    saliency = working_saliency(model, single, "integrated_gradients", steps=8)["T1_sag"][0].numpy()
    image = single["T1_sag"][0, 0].numpy()
    baseline = blurred_baseline(image, (1.0, 1.0, 1.0), sigma_mm=4.0)
    score = class_probability(model, single, "T1_sag")
    rng = np.random.default_rng(0)
    salient = deletion_curve(score, image, baseline, deletion_order(saliency, rng), steps=10)
    randomly = deletion_curve(score, image, baseline, random_order(image.size, rng), steps=10)
    assert salient.scores[0] == pytest.approx(randomly.scores[0]) and salient.scores[0] > 0.5
    assert salient.auc < 0.5 * randomly.auc


# --- metrics with known answers ------------------------------------------------------------------------------------
def test_pointing_game_hits_inside_and_misses_far_away():
    mask = np.zeros((10, 30, 30), bool)
    mask[4:6, 10:15, 10:15] = True
    inside = np.zeros(mask.shape)
    inside[5, 12, 12] = 1.0
    far = np.zeros(mask.shape)
    far[5, 12, 28] = 1.0
    assert pointing_game(inside, mask, (3.0, 1.0, 1.0)).hit
    result = pointing_game(far, mask, (3.0, 1.0, 1.0), margin_mm=10.0)
    assert not result.hit and result.distance_mm == pytest.approx(14.0)


def test_pointing_game_measures_the_margin_in_millimetres_along_thick_slices():
    mask = np.zeros((10, 20, 20), bool)
    mask[3, 10, 10] = True
    peak = np.zeros(mask.shape)
    peak[5, 10, 10] = 1.0  # two slices of 3 mm away: 6 mm
    assert not pointing_game(peak, mask, (3.0, 1.0, 1.0), margin_mm=5.0).hit
    assert pointing_game(peak, mask, (3.0, 1.0, 1.0), margin_mm=7.0).hit
    assert pointing_game(peak, mask, (1.0, 1.0, 1.0), margin_mm=2.5).hit


def test_pointing_game_takes_the_centre_of_a_plateau_and_misses_on_a_constant_map():
    mask = np.zeros((10, 20, 20), bool)
    mask[5, 10, 10] = True
    plateau = np.zeros(mask.shape)
    plateau[:, 10, 10] = 1.0  # a maximum smeared along the slice axis, centred on the region
    assert pointing_game(plateau, mask, (3.0, 1.0, 1.0), margin_mm=3.0).hit
    flat = pointing_game(np.ones(mask.shape), mask, (1.0, 1.0, 1.0))
    assert not flat.hit and np.isnan(flat.distance_mm)
    with pytest.raises(ValueError, match="region is empty"):
        pointing_game(plateau, np.zeros(mask.shape, bool), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="same grid"):
        pointing_game(plateau, mask[:5], (1.0, 1.0, 1.0))


def test_deletion_curve_of_a_region_detector_has_the_analytic_area():
    # score = mean of the image over a region of 100 of 1000 voxels; deleting the region first empties it in one step
    region = np.zeros((10, 10, 10), bool)
    region[2:6, 3:8, 4:9] = True
    image, baseline = np.ones(region.shape, np.float32), np.zeros(region.shape, np.float32)

    def score(batch):
        return batch[:, region].mean(axis=1)

    salient = deletion_curve(score, image, baseline, deletion_order(region.astype(float)), steps=10)
    np.testing.assert_allclose(salient.scores, [1.0] + [0.0] * 10)
    assert salient.auc == pytest.approx(0.05)  # = region share / 2 with steps aligned to the region's size
    randomly = deletion_curve(score, image, baseline, random_order(region.size, np.random.default_rng(0)), steps=10)
    assert randomly.auc == pytest.approx(0.5, abs=0.03)
    inverse = deletion_curve(score, image, baseline, deletion_order(1.0 - region), steps=10)
    assert inverse.auc == pytest.approx(0.95)


def test_deletion_curve_rejects_mismatched_inputs():
    image = np.zeros((4, 4, 4))
    with pytest.raises(ValueError, match="baseline"):
        deletion_curve(lambda b: b.mean(axis=(1, 2, 3)), image, np.zeros((4, 4, 3)), np.arange(64))
    with pytest.raises(ValueError, match="deletion order"):
        deletion_curve(lambda b: b.mean(axis=(1, 2, 3)), image, image, np.arange(10))


def test_blurred_baseline_keeps_the_mean_and_removes_the_detail():
    rng = np.random.default_rng(0)
    image = rng.random((10, 40, 40)).astype(np.float32)
    blurred = blurred_baseline(image, (3.0, 1.0, 1.0), sigma_mm=6.0)
    assert blurred.dtype == np.float32 and blurred.shape == image.shape
    assert blurred.mean() == pytest.approx(image.mean(), abs=5e-3)
    assert blurred.std() < 0.2 * image.std()


# --- the benchmark ---------------------------------------------------------------------------------------------------
def test_benchmark_prints_the_faithfulness_table_for_a_checkpoint(tmp_path, capsys):
    from cspineai.phantom import sample_parameters

    model = tiny_classifier()
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": model.state_dict(), "config": model.config}, checkpoint)
    seed = next(s for s in range(200) if sample_parameters(s)["label"] == 1
                and any(sample_parameters(s)["patient"].causal.values()))
    bench = load_script("benchmarks/bench_saliency.py")
    out_json = tmp_path / "rows.json"
    assert bench.main(["--model", str(checkpoint), "--n", "1", "--seed", str(seed), "--resolution", "coarse",
                       "--ig-steps", "2", "--steps", "4", "--threads", "1", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "machine:" in printed and "pointing (pos.)" in printed and "deletion AUC" in printed
    for method in ("gradcam", "integrated_gradients"):
        assert sum(line.startswith(method) for line in printed.splitlines()) == 2
    assert out_json.is_file()


def test_benchmark_refuses_a_checkpoint_that_does_not_fit_its_configuration(tmp_path):
    bench = load_script("benchmarks/bench_saliency.py")
    model = tiny_classifier()
    checkpoint = tmp_path / "bad.pt"
    torch.save({"model": model.state_dict(), "config": {**model.config, "widths": [4, 4, 4, 4]}}, checkpoint)
    with pytest.raises(CSpineModelError, match="do not fit"):
        bench.load_classifier(str(checkpoint))


def test_computing_maps_leaves_the_input_series_untouched(case_series):
    before = {name: volume.array.copy() for name, volume in case_series.items()}
    maps = saliency_maps(tiny_classifier(), case_series)
    maps["T1_sag"].array[:] = 7
    for name, volume in case_series.items():
        np.testing.assert_array_equal(volume.array, before[name])
