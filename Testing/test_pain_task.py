"""The ``pain`` training task, the shipped neck-pain model and the ablation driver."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cspineai.errors import CSpineInputError
from cspineai.manifest import read_manifest
from cspineai.tasks.pain import input_sizes, lr_axis, score_figures, write_tiny_cohort
from cspineai.training.config import load_config
from cspineai.training.tasks import get_task
from helpers import load_script

REPO = Path(__file__).resolve().parents[1]
SHIPPED_ID = "pain-abpdc-t1sag-ctbone"
TINY = ["task_options.sagittal_size=[8,32,32]", "task_options.axial_size=[8,32,32]", "model.widths=[4,8,8,8]"]


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Path:
    return write_tiny_cohort(tmp_path_factory.mktemp("tiny"), n_cases=8, test_cases=2)


def tiny_config(manifest: Path, *extra: str) -> dict:
    return load_config(REPO / "Training" / "configs" / "pain_cpu.yaml", [f"manifest={manifest}", *TINY, *extra])


def test_classifier_loss_falls_when_trained_a_few_steps_on_tiny_cases(tiny_manifest):
    torch.manual_seed(0)
    task = get_task("pain")
    config = tiny_config(tiny_manifest, "model.dropout=0.0", "task_options.aux_findings=0")
    cases = read_manifest(tiny_manifest)
    transform = task.transforms(config, train=False)
    items = [transform(item) for item in task.data_items(cases, config)]
    batch = {name: torch.stack([torch.as_tensor(i[name]) for i in items]) for name in input_sizes(config)}
    batch["label"] = torch.tensor([i["label"] for i in items])
    batch["case_id"] = [i["case_id"] for i in items]
    model = task.build_model(config).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, outputs = task.step(model, batch, config)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert outputs["score"].shape == (8,)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_transforms_put_each_series_on_its_configured_working_grid(tiny_manifest):
    task = get_task("pain")
    config = tiny_config(tiny_manifest)
    item = task.data_items(read_manifest(tiny_manifest)[:1], config)[0]
    out = task.transforms(config, train=True)(item)
    assert tuple(out["T1_sag"].shape) == (1, 8, 32, 32)
    assert tuple(out["CT_bone"].shape) == (1, 8, 32, 32)
    assert 0.0 <= float(out["CT_bone"].min()) and float(out["CT_bone"].max()) <= 1.5  # jitter may exceed 1 a little


def test_monai_caches_hold_the_preprocessed_series_so_epochs_cost_only_the_network(tiny_manifest):
    from monai.data import CacheDataset

    task = get_task("pain")
    config = tiny_config(tiny_manifest)
    items = task.data_items(read_manifest(tiny_manifest)[:2], config)
    dataset = CacheDataset(items, task.transforms(config, train=True), progress=False, num_workers=1)
    cached = dataset._cache[0]
    assert tuple(np.asarray(cached["T1_sag"]).shape) == (1, 8, 32, 32)  # resampled, not the file path
    assert tuple(np.asarray(cached["CT_bone"]).shape) == (1, 8, 32, 32)


def test_left_right_axis_is_width_on_axial_grids_and_depth_on_sagittal_grids():
    # Axial canonical order LPS: i runs L (tensor W); sagittal PIR: k runs R (tensor D). AP and SI are never flipped.
    assert lr_axis("CT_bone") == 2
    assert lr_axis("T2_tra") == 2
    assert lr_axis("T1_sag") == 0


def test_mirror_flips_both_series_of_a_case_together_along_their_left_right_axes():
    from cspineai.tasks.pain import _mirror_transform

    mirror = _mirror_transform()({"T1_sag": 0, "CT_bone": 2}, prob=1.0)
    sag = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    ax = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    out = mirror({"T1_sag": sag, "CT_bone": ax, "label": 1})
    np.testing.assert_array_equal(out["T1_sag"], sag[:, ::-1])
    np.testing.assert_array_equal(out["CT_bone"], ax[..., ::-1])
    assert out["label"] == 1


def test_training_items_name_the_case_and_series_when_a_series_is_missing(tiny_manifest):
    task = get_task("pain")
    config = tiny_config(tiny_manifest, "task_options.series=[T2_sag,CT_bone]")
    with pytest.raises(CSpineInputError, match=r"tiny000.*T2_sag"):
        task.data_items(read_manifest(tiny_manifest), config)


def test_config_refuses_a_pair_without_one_axial_and_one_sagittal_series(tiny_manifest):
    task = get_task("pain")
    config = tiny_config(tiny_manifest, "task_options.series=[T1_sag,T2_sag]")
    with pytest.raises(CSpineInputError, match="one axial and one sagittal"):
        task.build_model(config)


def test_validation_threshold_is_reused_on_test_data_and_never_rechosen():
    y = np.array([0, 0, 1, 1, 0, 1])
    score = np.array([0.1, 0.35, 0.4, 0.8, 0.2, 0.9])
    chosen = score_figures(y, score)
    assert chosen["auc"] == pytest.approx(1.0)
    reused = score_figures(y, score, fitted={"threshold": 0.85})
    assert reused["threshold"] == 0.85
    assert reused["sensitivity"] == pytest.approx(1 / 3)
    assert set(chosen) >= {"accuracy", "f1", "auc", "auc_low", "auc_high", "threshold"}


def test_engine_trains_the_pain_task_and_keeps_the_threshold_in_the_checkpoint(tiny_manifest, tmp_path):
    from cspineai.training.checkpoint import fitted_figures, load_checkpoint
    from cspineai.training.distributed import DistInfo
    from cspineai.training.loop import fit

    config = tiny_config(tiny_manifest, f"output_dir={tmp_path / 'run'}", "optim.epochs=1", "data.cache=none",
                         "data.batch_size=3")
    fit(config, DistInfo())
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert "threshold" in fitted_figures(state)
    assert (tmp_path / "run" / "metrics.json").is_file()


def _shipped_entry():
    from cspineai.models.registry import list_models

    return next((e for e in list_models() if e.id == SHIPPED_ID), None)


@pytest.mark.skipif(_shipped_entry() is None, reason=f"the registry has no {SHIPPED_ID} model yet")
def test_shipped_model_loads_with_its_hash_checked_and_predicts_a_generated_case_within_two_seconds():
    from cspineai.models.registry import load_model, sha256_file
    from cspineai.phantom import generate_case
    from cspineai.prediction import predict_pain

    entry = _shipped_entry()
    assert entry.path.stat().st_size < 20 * 1024 * 1024
    assert sha256_file(entry.path) == entry.sha256
    model, entry, state = load_model(SHIPPED_ID)
    assert 0.0 < state["fitted"]["threshold"] < 1.0
    case = generate_case(4242, resolution="coarse")
    start = time.perf_counter()
    result = predict_pain(case.series, model)
    elapsed = time.perf_counter() - start
    assert 0.0 <= result.probability <= 1.0
    assert set(result.features) == {"CT_bone", "T1_sag"}
    assert elapsed < 2.0, f"prediction took {elapsed:.2f} s"


@pytest.mark.skipif(_shipped_entry() is None, reason=f"the registry has no {SHIPPED_ID} model yet")
def test_shipped_model_refuses_a_file_whose_hash_does_not_match(tmp_path):
    import shutil

    from cspineai.errors import CSpineModelError
    from cspineai.models.registry import ModelEntry, verify

    entry = _shipped_entry()
    copy = tmp_path / entry.file
    shutil.copyfile(entry.path, copy)
    with open(copy, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    altered = ModelEntry(**{**entry.to_json(), "folder": tmp_path})
    with pytest.raises(CSpineModelError, match="does not match"):
        verify(altered)


def _load_ablation():
    return load_script("benchmarks/ablation_pain.py")


def test_ablation_driver_runs_a_minimal_protocol_end_to_end_and_skips_finished_runs(tiny_manifest, tmp_path, capsys):
    ablation = _load_ablation()
    markdown = tmp_path / "ablation.md"
    argv = ["--manifest", str(tiny_manifest), "--out", str(tmp_path / "runs"), "--markdown", str(markdown),
            "--protocol", "reduced", "--pairs", "T1_sag+CT_bone", "--models", "conv,abpdc", "--folds", "0",
            "--epochs", "1", "--sagittal-size", "8", "32", "32", "--axial-size", "8", "32", "32"]
    assert ablation.main(argv) == 0
    printed = capsys.readouterr().out
    text = markdown.read_text(encoding="utf-8")
    assert printed.rstrip().endswith(text.rstrip())  # the engine's own progress lines come before the table
    assert "8 cases, 6 for training/validation in 2 folds, 2 held-out test cases" in text
    assert "reduced: 1 epochs max, sagittal 8x32x32" in text
    assert "| plain conv | 1 |" in text and "| ABPDC | 1 |" in text
    result = tmp_path / "runs" / "T1_sag+CT_bone" / "abpdc" / "fold_0" / "test_scores.json"
    stamp = result.stat().st_mtime_ns
    scores = json.loads(result.read_text(encoding="utf-8"))
    assert len(scores["score"]) == 2
    assert ablation.main(argv) == 0  # everything finished: nothing is trained or rescored again
    assert result.stat().st_mtime_ns == stamp


def test_evaluation_reports_the_ceilings_of_synthetic_cases_and_nothing_for_real_ones(tmp_path):
    import json

    from cspineai.manifest import Case
    from cspineai.phantom import sample_parameters
    from cspineai.tasks.pain import PainTask

    cases = []
    for seed in range(30):
        drawn = sample_parameters(5000 + seed)
        file = tmp_path / f"clinical_{seed}.json"
        file.write_text(json.dumps({"pain_probability": drawn["probability"], "findings": drawn["patient"].findings},
                                   default=float), encoding="utf-8")
        cases.append(Case(case_id=f"c{seed}", label=drawn["label"], paths={"clinical": file}))
    figures = PainTask().reference_figures(cases)
    assert set(figures) == {"bayes_accuracy", "image_only_bayes_accuracy", "image_only_oracle_accuracy",
                            "image_only_oracle_auc"}
    assert 0.5 <= figures["image_only_bayes_accuracy"] <= 1.0 and 0.5 <= figures["bayes_accuracy"] <= 1.0
    assert figures["image_only_oracle_auc"] > 0.7  # the findings carry most of the outcome
    assert PainTask().reference_figures([*cases, Case(case_id="real", label=0)]) == {}


def test_auxiliary_findings_head_trains_on_synthetic_findings_and_masks_cases_without_them(tmp_path):
    import json

    from monai.data import DataLoader, Dataset

    from cspineai.manifest import read_manifest, write_manifest
    from cspineai.nn.classifier import build_classifier
    from cspineai.phantom import sample_parameters
    from cspineai.tasks.pain import AUX_FINDINGS, PainTask

    cases = read_manifest(write_tiny_cohort(tmp_path, n_cases=4))
    for n, case in enumerate(cases[:2]):  # two synthetic cases with findings, two "real" ones without
        drawn = sample_parameters(700 + n)
        file = tmp_path / f"clinical_{n}.json"
        file.write_text(json.dumps({**drawn["clinical"], "findings": drawn["patient"].findings}, default=float),
                        encoding="utf-8")
        case.paths["clinical"] = file
    manifest = write_manifest(cases, tmp_path / "with_findings.csv")
    config = tiny_config(manifest, "task_options.aux_findings=0.5")
    task = PainTask()
    model = task.build_model(config)
    assert model.aux_head.out_features == len(AUX_FINDINGS)
    items = task.data_items(read_manifest(manifest), config)
    assert np.isfinite(items[0]["aux"]).all() and np.isnan(items[3]["aux"]).all()
    # Typed like the images, so that items from a disk cache (tensors) and fresh ones (arrays) share a batch.
    assert isinstance(task.transforms(config, False)(items[0])["aux"], torch.Tensor)
    batch = next(iter(DataLoader(Dataset(items, task.transforms(config, True)), batch_size=4,
                                 collate_fn=task.collate())))
    loss, outputs = task.step(model, batch, config)
    assert torch.isfinite(loss)
    figures = task.compute_metrics(outputs, config)
    assert {f"aux_r_{name}" for name in AUX_FINDINGS} <= set(figures)
    loss.backward()
    assert model.aux_head.weight.grad.abs().sum() > 0
    # The deployed model rebuilds from its stored configuration with the head, so its weights load strictly.
    build_classifier(model.config).load_state_dict(model.state_dict())
    # Without the option the model has no head and the items no targets (the paper's protocol).
    plain = tiny_config(manifest, "task_options.aux_findings=0")
    assert task.build_model(plain).aux_head is None and "aux" not in task.data_items(cases, plain)[0]


def test_ablation_pins_labels_only_training_keeps_aux_runs_apart_and_prints_no_repository_path(
        tiny_manifest, tmp_path, monkeypatch):
    import cspineai.training.config as config_module

    ablation = _load_ablation()
    pair = ("T1_sag", "CT_bone")
    base = ["--manifest", str(tiny_manifest), "--pairs", "T1_sag+CT_bone", "--models", "conv,abpdc"]
    # As if a configuration file set a weight for the shipped model: the paper's protocol must not inherit it.
    load_config = config_module.load_config
    monkeypatch.setattr(config_module, "load_config",
                        lambda file, sets: load_config(file, ["task_options.aux_findings=0.7", *sets]))
    for protocol in ablation.PROTOCOLS:
        args = ablation.parse_args([*base, "--protocol", protocol])
        assert [key for _, key in ablation.plan_runs(args)] == ["conv", "abpdc"]
        assert ablation.run_config(args, pair, "abpdc", 0, tmp_path / "run")["task_options"]["aux_findings"] == 0.0
    args = ablation.parse_args([*base, "--aux-findings", "0.5"])
    keys = [key for _, key in ablation.plan_runs(args)]
    assert keys == ["conv+aux0.5", "abpdc+aux0.5"]  # own folders: never skipped as, or mixed with, label-only runs
    assert ablation.run_config(args, pair, keys[1], 0, tmp_path / "run")["task_options"]["aux_findings"] == 0.5

    # The report: both runs as their own rows, every path inside the repository relative to its root.
    args = ablation.parse_args(["--manifest", str(REPO / "data" / "pain250" / "manifest.csv"), "--aux-findings", "0.5"])
    protocol = {"name": "reduced", "epochs": 1, "sagittal_size": [8, 32, 32], "axial_size": [8, 32, 32],
                "widths": [4, 8, 8, 8]}
    protocols = [{**protocol, "command": f"python benchmarks/ablation_pain.py --manifest {REPO}/data/old/manifest.csv"},
                 {**protocol, "aux_findings": 0.5, "cohort": "data/pain250/manifest.csv", "command": args.command}]
    row = {"folds": 1, "f1": "–", "auc": "–", "auc_ci": "–", "val_auc": "–", "auc_mean": 0.5}
    table = {"pairs": [pair], "variants": ["abpdc"], "aux_keys": ["abpdc+aux0.5"],
             "summaries": {ablation.run_name(pair, "abpdc"): {**row, "accuracy": "0.610 ± 0.000"},
                           ablation.run_name(pair, "abpdc+aux0.5"): {**row, "accuracy": "0.720 ± 0.000"}}}
    reference = {"bayes_accuracy": 0.87, "image_only_bayes_accuracy": 0.8, "image_only_oracle_accuracy": 0.78,
                 "image_only_oracle_auc": 0.85}
    text = ablation.render(args, args.command, read_manifest(tiny_manifest), reference, table, protocols)
    assert "| ABPDC | 1 | 0.610 ± 0.000 |" in text
    assert "| ABPDC + auxiliary findings (weight 0.5; synthetic only) | 1 | 0.720 ± 0.000 |" in text
    assert "auxiliary findings weight 0.5" in text and "image-only oracle" in text
    assert "`data/pain250/manifest.csv`" in text and "--manifest data/old/manifest.csv" in text
    assert str(REPO) not in text


def test_ablation_report_marks_joint_fpran_rows_of_mri_only_pairs_not_applicable(tiny_manifest):
    ablation = _load_ablation()
    args = ablation.parse_args(["--manifest", str(tiny_manifest), "--fpran", "1"])
    pairs = [("T2_sag", "T2_tra"), ("T1_sag", "CT_bone")]
    table = {"pairs": pairs, "variants": ["abpdc"], "aux_keys": ["abpdc+fpran1"], "summaries": {}}
    text = ablation.render(args, args.command, read_manifest(tiny_manifest), {}, table, [])
    mri_only, with_ct = text.split("### T1_sag + CT_bone")[0], text.split("### T1_sag + CT_bone")[1]
    assert "| ABPDC + FPRAN (joint training, λ_sim 1) | n/a (FPRAN registers a CT to an MRI" in mri_only
    assert "| ABPDC + FPRAN (joint training, λ_sim 1) | not run |" in with_ct.split("## Table 2")[0]
