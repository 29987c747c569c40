"""The ``registration`` training task: truth on the working grids, exact header augmentation, a step, the engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cspineai.io import write_volume
from cspineai.manifest import Case, read_manifest, write_manifest
from cspineai.metrics.registration import landmark_errors
from cspineai.nn.fpran import base_transform_from_volumes
from cspineai.registration import working_grids
from cspineai.tasks.registration import (
    RegistrationTask,
    base_of,
    prepare_pair,
    rigid_matrix,
    vertebra_map,
    write_split_manifest,
)
from cspineai.training.config import load_config
from test_registration import make_pair

SPACING = 3.0
CONFIG_FILE = Path(__file__).resolve().parents[1] / "Training" / "configs" / "registration.yaml"
CONFIG = {"model": {"channels": [4, 8, 8, 16], "hidden": 16, "radius": [1, 1, 1], "affine_bound": 0.25,
                    "paired_affine": True, "image_level": False},
          "task_options": {**RegistrationTask.options_defaults, "spacing_mm": SPACING,
                           "loss": {"similarity": "ncc", "sim": 1.0, "reg": 1.0, "dice": 1.0, "landmark": 0.05}}}


def prepared(pair: dict) -> dict:
    return prepare_pair(pair["ct"], pair["mri"], pair["ct_labels"], pair["mri_labels"], pair["mri_points"],
                        pair["ct_points"], SPACING)


def batch_of(item: dict) -> dict:
    return {k: (torch.as_tensor(np.asarray(v))[None] if k not in ("case_id", "spacing") else [v])
            for k, v in item.items()}


@pytest.fixture(scope="module")
def pair() -> dict:
    return make_pair(strength=1.0)


def test_vertebra_map_joins_body_and_posterior_elements_per_level():
    labels = np.array([0, 1, 2, 3, 9, 10, 15, 16, 22, 100])
    np.testing.assert_array_equal(vertebra_map(labels), [0, 0, 0, 1, 7, 0, 0, 1, 7, 0])


def test_header_derived_base_maps_mri_landmarks_onto_ct_landmarks_when_nothing_moved():
    item = prepared(make_pair(strength=0.0))  # CT and MRI agree: the truth is the header alignment
    fixed = np.c_[item["fixed_points"], np.ones(len(item["fixed_points"]))]
    mapped = fixed @ base_of(item).T
    np.testing.assert_allclose(mapped[:, :3], item["moving_points"], atol=1e-5)


def test_moving_the_ct_header_changes_r_exactly_as_a_ct_acquired_there_would(pair, rng):
    item = prepared(pair)
    move = rigid_matrix(rng.uniform(-0.05, 0.05, 3), rng.uniform(-5, 5, 3), item["mri_centre"].astype(float))
    ct_w, mri_w = working_grids(pair["ct"], pair["mri"], SPACING)
    moved_header = move @ ct_w.ijk_to_lps
    moved = type(ct_w)(ct_w.array, ct_w.spacing, moved_header[:3, 3], moved_header[:3, :3] @ np.diag(
        [1 / s for s in ct_w.spacing]), ct_w.modality, "moved")
    np.testing.assert_allclose(base_of(item, move), base_transform_from_volumes(mri_w, moved), atol=1e-5)
    np.testing.assert_allclose(base_of(item), base_transform_from_volumes(mri_w, ct_w), atol=1e-5)


def test_a_fresh_network_scores_the_header_alignments_landmark_error(pair):
    task = RegistrationTask()
    torch.manual_seed(0)
    model = task.build_model(CONFIG)
    item = task.transforms(CONFIG, train=False).transforms[1](prepared(pair) | {"case_id": "p", "spacing": "3mm"})
    model.eval()
    with torch.no_grad():
        _, outputs = task.step(model, batch_of(item), CONFIG)
    header_error = landmark_errors(pair["mri_points"], pair["ct_points"]).mean()
    assert float(outputs["landmark_mm"][0]) == pytest.approx(header_error, abs=0.05)
    assert 0.0 < float(outputs["dice"][0]) < 0.9


def test_a_training_step_gives_every_trainable_part_a_gradient(pair):
    task = RegistrationTask()
    torch.manual_seed(0)
    model = task.build_model(CONFIG)
    assert model.spacing_mm == SPACING
    augment = task.transforms(CONFIG, train=True).transforms[1]
    augment.set_random_state(0)
    batch = batch_of(augment(prepared(pair) | {"case_id": "p", "spacing": "3mm"}))
    assert not np.allclose(batch["base"][0].numpy(), base_of(prepared(pair)), atol=1e-3)  # the header moved
    loss, outputs = task.step(model, batch, CONFIG)
    loss.backward()
    assert torch.isfinite(loss) and set(outputs) >= {"landmark_mm", "dice", "loss_sim", "loss_reg", "loss_dice"}
    heads = [model.fpran.level4.affine.params, model.fpran.level4.head, *[sam.head for sam in model.fpran.fine]]
    assert all(float(head.weight.grad.abs().sum()) > 0 for head in heads)


def test_split_manifest_holds_out_the_last_cases_by_id(tmp_path):
    cases = [Case(case_id=f"c{n:02d}", label=n % 2, fold=n % 5, split="test" if n % 4 == 0 else "train")
             for n in range(12)]
    source = write_manifest(cases, tmp_path / "manifest.csv")
    out = read_manifest(write_split_manifest(source, tmp_path / "registration.csv", n_train=8, validation_every=4),
                        check_files=False)
    assert [c.split for c in out] == ["train"] * 8 + ["test"] * 4
    assert [c.fold for c in out[:8]] == [0, 1, 2, 3, 0, 1, 2, 3] and all(c.fold is None for c in out[8:])


def write_cases(folder, strengths) -> list[Case]:
    cases = []
    for n, strength in enumerate(strengths):
        pair = make_pair(strength=strength, seed=n)
        case_dir = folder / f"case{n}"
        paths = {"CT_bone": write_volume(pair["ct"], case_dir / "CT_bone.nii.gz"),
                 "T1_sag": write_volume(pair["mri"], case_dir / "T1_sag.nii.gz"),
                 "CT_bone_labels": write_volume(pair["ct_labels"], case_dir / "CT_bone_labels.nii.gz"),
                 "T1_sag_labels": write_volume(pair["mri_labels"], case_dir / "T1_sag_labels.nii.gz")}
        landmarks = {"MRI": {f"L{i}": p.tolist() for i, p in enumerate(pair["mri_points"])},
                     "CT": {f"L{i}": p.tolist() for i, p in enumerate(pair["ct_points"])}}
        (case_dir / "landmarks.json").write_text(json.dumps(landmarks), encoding="utf-8")
        paths["landmarks"] = case_dir / "landmarks.json"
        cases.append(Case(case_id=f"case{n}", fold=n % 2, split="train", paths=paths))
    return cases


def test_the_engine_trains_and_validates_the_task_from_the_shipped_config(tmp_path):
    from cspineai.training.loop import fit

    manifest = write_manifest(write_cases(tmp_path, [0.8, -0.8]), tmp_path / "manifest.csv")
    config = load_config(CONFIG_FILE, [
        f"manifest={manifest}", f"output_dir={tmp_path / 'run'}", "optim.epochs=1", "data.folds=2",
        "model.channels=[4,8,8,16]", "model.hidden=16", "task_options.spacing_mm=3.0"])
    result = fit(config)
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert result["epochs_completed"] == 1 and np.isfinite(result["best_value"])
    metrics = (tmp_path / "run" / "metrics.csv").read_text(encoding="utf-8")
    assert "val_landmark_mm" in metrics and "val_dice" in metrics


def test_a_four_level_model_fine_tunes_with_the_image_level_added(tmp_path):
    from cspineai.training.checkpoint import load_checkpoint
    from cspineai.training.loop import fit

    manifest = write_manifest(write_cases(tmp_path, [0.8, -0.8]), tmp_path / "manifest.csv")
    common = [f"manifest={manifest}", "optim.epochs=1", "data.folds=2", "task_options.spacing_mm=3.0"]
    fit(load_config(CONFIG_FILE, [*common, f"output_dir={tmp_path / 'four'}", "model.channels=[4,8,8,16]",
                                  "model.hidden=16"]))
    source = tmp_path / "four" / "checkpoints" / "best.pt"
    config = load_config(CONFIG_FILE, [*common, f"output_dir={tmp_path / 'five'}", f"init_from={source}",
                                       "model.image_level=true"])
    assert config["model"]["channels"] == [4, 8, 8, 16] and config["model"]["image_level"] is True
    fit(config)
    weights = load_checkpoint(tmp_path / "five" / "checkpoints" / "best.pt")["model"]
    assert "fpran.fine.3.head.weight" in weights and "ct_encoder.image.conv.weight" in weights
