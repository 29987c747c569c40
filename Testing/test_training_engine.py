"""The training engine on its built-in ``toy`` task: configuration checks, folds, a short run, resume, evaluation."""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cspineai.errors import CSpineInputError
from cspineai.manifest import read_manifest
from cspineai.tasks.toy import write_toy_cohort
from cspineai.training import data as data_mod
from cspineai.training.checkpoint import load_checkpoint
from cspineai.training.config import load_config, parse_overrides
from cspineai.training.loop import fit, lr_factor
from cspineai.training.main import evaluate_main, train_main

REPO = Path(__file__).resolve().parents[1]
TOY_CONFIG = REPO / "Training" / "configs" / "toy.yaml"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_toy_cohort(tmp_path_factory.mktemp("toy") / "cohort", n_cases=12, shape=(6, 12, 12))


def write_config(folder: Path, manifest: Path, **sections) -> Path:
    raw = yaml.safe_load(TOY_CONFIG.read_text(encoding="utf-8"))
    raw["manifest"] = str(manifest)
    raw["output_dir"] = str(folder / "run")
    raw["optim"]["epochs"] = 3
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


# --- configuration ----------------------------------------------------------------------------------------------------


def test_shipped_toy_config_is_valid():
    config = load_config(TOY_CONFIG)
    assert config["task"] == "toy" and config["model"]["width"] == 8
    assert Path(config["manifest"]).is_absolute()  # relative manifests resolve against the config's folder


def test_rejects_unknown_configuration_key_naming_it(tmp_path, cohort):
    path = write_config(tmp_path, cohort, optim={"learning_rate": 0.1})
    with pytest.raises(CSpineInputError, match=r"unknown configuration key 'optim\.learning_rate'") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_rejects_unknown_task_section_key_and_wrong_types(tmp_path, cohort):
    with pytest.raises(CSpineInputError, match=r"model\.depth"):
        load_config(write_config(tmp_path, cohort, model={"depth": 3}))
    with pytest.raises(CSpineInputError, match=r"data\.batch_size must be int"):
        load_config(write_config(tmp_path, cohort), ["data.batch_size=four"])
    with pytest.raises(CSpineInputError, match=r"optim\.amp must be one of"):
        load_config(write_config(tmp_path, cohort), ["optim.amp=fp8"])


def test_overrides_parse_yaml_scalars_and_dotted_keys(tmp_path, cohort):
    assert parse_overrides(["optim.lr=1e-3", "data.fold=-1", "log.tensorboard=false"]) == {
        "optim": {"lr": "1e-3"}, "data": {"fold": -1}, "log": {"tensorboard": False}}
    config = load_config(write_config(tmp_path, cohort), ["optim.lr=1e-3"])
    assert config["optim"]["lr"] == pytest.approx(1e-3)  # YAML reads 1e-3 as text; the schema makes it a float
    with pytest.raises(CSpineInputError, match="not key=value"):
        parse_overrides(["optim.lr"])


def test_unknown_task_is_refused(tmp_path, cohort):
    with pytest.raises(CSpineInputError, match="unknown task 'nosuchtask'"):
        load_config(write_config(tmp_path, cohort, task="nosuchtask"))


def test_learning_rate_warms_up_then_decays_stepwise():
    assert [lr_factor(e, 2, 2, 0.5) for e in range(7)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 0.5, 0.5, 0.25])


# --- data -------------------------------------------------------------------------------------------------------------


def test_manifest_folds_are_used_when_present(cohort):
    cases = read_manifest(cohort)
    train, val = data_mod.split_cases(cases, 1, 5, seed=0)
    assert {c.fold for c in val} == {1} and {c.fold for c in train} == {0}


def test_computed_folds_keep_patients_together_and_balance_labels(cohort):
    cases = read_manifest(cohort)
    for n, case in enumerate(cases):
        case.fold = None
        case.fields["patient_id"] = f"p{n // 2}"  # two cases (e.g. two visits) per patient
    assignment = data_mod.assign_folds(cases, 3, seed=7)
    for n in range(0, len(cases), 2):
        assert assignment[cases[n].case_id] == assignment[cases[n + 1].case_id]
    assert sorted(set(assignment.values())) == [0, 1, 2]
    assert data_mod.assign_folds(cases, 3, seed=7) == assignment  # deterministic given the seed


def test_test_split_cases_never_train_or_validate(cohort):
    cases = read_manifest(cohort)
    cases[0].split = "test"
    train, val = data_mod.split_cases(cases, 0, 2, seed=0)
    assert cases[0].case_id not in {c.case_id for c in train + val}


def test_manifest_with_missing_file_fails_at_start_naming_it(tmp_path, cohort):
    manifest = tmp_path / "manifest.csv"
    gone = str(cohort.parent / "images" / "gone.nii.gz")
    text = cohort.read_text(encoding="utf-8").replace("images/toy003.nii.gz", gone)
    text = text.replace("images/", str(cohort.parent / "images") + "/")
    manifest.write_text(text, encoding="utf-8")
    config = load_config(write_config(tmp_path, manifest))
    with pytest.raises(CSpineInputError, match=r"gone\.nii\.gz"):
        fit(config)
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- training ---------------------------------------------------------------------------------------------------------


def test_toy_task_trains_and_writes_every_output(tmp_path, cohort, capsys):
    config = load_config(write_config(tmp_path, cohort, optim={"epochs": 2, "grad_clip": 1.0, "accumulate": 2,
                                                               "ema": 0.9, "warmup_epochs": 1}))
    result = fit(config)
    run = tmp_path / "run"
    assert result["epochs_completed"] == 2 and result["n_train"] == 6 and result["n_val"] == 6
    assert {"checkpoints", "config.yaml", "metrics.csv", "metrics.json"} <= {p.name for p in run.iterdir()}
    assert yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) == config
    rows = (run / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and "val_auc" in rows[0]
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["monitor"] == "auc" and 0.0 <= metrics["final"]["val_auc"] <= 1.0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["ema"] is not None
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "config", "history"}
    out = capsys.readouterr().out
    assert "[cspineai-progress]" in out  # plain progress lines when standard output is not a terminal


def test_training_changes_the_weights_and_lowers_the_training_loss(tmp_path, cohort):
    config = load_config(write_config(tmp_path, cohort, optim={"epochs": 4, "lr": 0.01}, data={"fold": -1}))
    fit(config)
    history = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, cohort):
    config = load_config(write_config(tmp_path, cohort, optim={"epochs": 1}))
    fit(config)
    with pytest.raises(CSpineInputError, match="--resume"):
        fit(config)


def test_resume_refuses_a_changed_configuration(tmp_path, cohort):
    fit(load_config(write_config(tmp_path, cohort, optim={"epochs": 1})))
    changed = load_config(write_config(tmp_path, cohort, optim={"epochs": 2, "lr": 0.5}))
    with pytest.raises(CSpineInputError, match=r"optim\.lr"):
        fit(changed, resume=True)


def test_early_stopping_ends_the_run(tmp_path, cohort):
    # AUC of the toy task saturates at 1.0 at once: with patience 1 the run stops after its second epoch.
    config = load_config(write_config(tmp_path, cohort, optim={"epochs": 8}, early_stopping={"patience": 1}))
    result = fit(config)
    assert result["epochs_completed"] < 8
    assert result["epochs_completed"] - result["best_epoch"] == 1


def test_val_every_validates_every_nth_epoch_and_the_last(tmp_path, cohort):
    config = load_config(write_config(tmp_path, cohort, optim={"epochs": 5}, data={"val_every": 2}))
    result = fit(config)
    rows = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["history"]
    assert [row["epoch"] for row in rows if "val_loss" in row] == [2, 4, 5]
    assert result["epochs_completed"] == 5 and result["best_epoch"] in (2, 4, 5)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["epoch"] == result["best_epoch"]
    with pytest.raises(CSpineInputError, match=r"data\.val_every must be at least 1"):
        load_config(write_config(tmp_path, cohort, data={"val_every": 0}))


def _train_subprocess(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "Training" / "train.py"), "--config", str(config),
                             "--set", "log.tensorboard=false", *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_weights_of_an_uninterrupted_run(tmp_path, cohort):
    epochs = 8
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = write_config(tmp_path / "a", cohort, optim={"epochs": epochs})
    killed = write_config(tmp_path / "b", cohort, optim={"epochs": epochs})
    process = _train_subprocess(straight)
    assert process.wait(timeout=120) == 0, process.stdout.read()

    process = _train_subprocess(killed)
    csv_file = tmp_path / "b" / "run" / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # metrics.csv gains epoch N's row right after epoch N's checkpoint is renamed into place.
        if csv_file.exists() and len(csv_file.read_text(encoding="utf-8").splitlines()) >= 1 + 2:
            break
        assert process.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.01)
    assert process.poll() is None, "training ended before it could be interrupted"
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    interrupted_at = load_checkpoint(tmp_path / "b" / "run" / "checkpoints" / "last.pt")["epoch"]
    assert 2 <= interrupted_at < epochs

    process = _train_subprocess(killed, "--resume")
    log = process.communicate(timeout=120)[0]
    assert process.returncode == 0, log
    assert f"resuming after epoch {interrupted_at}" in log
    a = load_checkpoint(tmp_path / "a" / "run" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "run" / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == epochs
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert len((tmp_path / "b" / "run" / "metrics.csv").read_text(encoding="utf-8").splitlines()) == 1 + epochs


def test_cancel_during_validation_keeps_the_trained_epoch_and_resumes_after_it(tmp_path, cohort, monkeypatch):
    # SIGTERM (a cluster's pre-emption, Slicer's Cancel) may arrive while a long validation runs: the run stops at
    # the next validation batch, and the epoch it had trained is not lost.
    from cspineai.errors import CSpineCancelled
    from cspineai.progress import CancelToken
    from cspineai.tasks.toy import ToyTask

    token = CancelToken()
    validated = []
    step = ToyTask.step

    def cancelling_step(self, model, batch, config):
        if not model.training:
            validated.append(len(batch["label"]))
            token.cancel()
        return step(self, model, batch, config)

    config = load_config(write_config(tmp_path, cohort, optim={"epochs": 2}, data={"val_batch_size": 1}))
    monkeypatch.setattr(ToyTask, "step", cancelling_step)
    with pytest.raises(CSpineCancelled):
        fit(config, cancel=token)
    assert validated == [1]  # stopped at the second validation batch, not after the whole validation
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert "train_loss" in state["history"][0] and "val_loss" not in state["history"][0]

    monkeypatch.setattr(ToyTask, "step", step)
    result = fit(config, resume=True)
    assert result["epochs_completed"] == 2
    rows = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["history"]
    assert "val_loss" not in rows[0] and "val_loss" in rows[1]
    assert result["best_epoch"] == 2


def test_train_script_runs_with_slicer_shaped_argv(tmp_path, cohort, monkeypatch, capsys):
    # `Slicer --no-main-window --python-script Training/train.py --config c.yaml` runs the script in Slicer's
    # interpreter with sys.argv = [script, args...]; launcher flags may trail along and must be ignored.
    config = write_config(tmp_path, cohort, optim={"epochs": 1})
    script = REPO / "Training" / "train.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--config", str(config), "--set", "log.tensorboard=false",
                                      "--disable-modules"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert "ignoring arguments" in capsys.readouterr().err


def test_train_entry_point_reports_bad_config_as_one_line(tmp_path, cohort, capsys):
    config = write_config(tmp_path, cohort, optim={"learning_rate": 1.0})
    assert train_main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "optim.learning_rate" in err and "Traceback" not in err


# --- evaluation and cross-validation --------------------------------------------------------------------------------


def test_evaluate_scores_a_checkpoint_with_the_validation_threshold(tmp_path, cohort, capsys):
    fit(load_config(write_config(tmp_path, cohort, optim={"epochs": 2})))
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    code = evaluate_main(["--checkpoint", str(checkpoint), "--split", "all", "--output", str(tmp_path / "eval"),
                          "--device", "cpu"])
    assert code == 0
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text(encoding="utf-8"))
    state = load_checkpoint(checkpoint)
    val_threshold = state["history"][state["epoch"] - 1]["val_threshold"]
    assert result["figures"]["threshold"] == pytest.approx(val_threshold)  # not re-chosen on the scored cases
    assert result["figures"]["n_cases"] == 12
    assert len((tmp_path / "eval" / "predictions.csv").read_text(encoding="utf-8").splitlines()) == 13


def test_evaluate_scores_the_validation_fold_the_run_validated_on(tmp_path, cohort):
    config = load_config(write_config(tmp_path, cohort, optim={"epochs": 1}))
    result = fit(config)
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    assert evaluate_main(["--checkpoint", str(checkpoint), "--fold", "0", "--output", str(tmp_path / "eval"),
                          "--device", "cpu"]) == 0
    figures = json.loads((tmp_path / "eval" / "evaluation.json").read_text(encoding="utf-8"))["figures"]
    assert figures["n_cases"] == result["n_val"] < 12
    validated = load_checkpoint(checkpoint)["history"][0]
    assert figures["auc"] == pytest.approx(validated["val_auc"]) and figures["loss"] == pytest.approx(
        validated["val_loss"], rel=1e-5)
    with pytest.raises(SystemExit):  # --fold and --split exclude each other
        evaluate_main(["--checkpoint", str(checkpoint), "--fold", "0", "--split", "all"])


def test_all_folds_training_writes_a_cross_validation_report(tmp_path, cohort, capsys):
    config = write_config(tmp_path, cohort, optim={"epochs": 1})
    assert train_main(["--config", str(config), "--folds", "all", "--set", "log.tensorboard=false"]) == 0
    run = tmp_path / "run"
    markdown = (run / "cv_report.md").read_text(encoding="utf-8")
    assert "2 folds, 12 validation cases" in markdown and "mean ± SD" in markdown
    lines = (run / "cv_report.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("fold,n_val,loss") and lines[-2].startswith("mean,12,")
    capsys.readouterr()
    assert evaluate_main(["--cv", str(run)]) == 0
    assert "mean ± SD" in capsys.readouterr().out


def test_cross_validation_mean_and_sd_are_computed_over_folds(tmp_path):
    from cspineai.training.logging import write_json
    from cspineai.training.main import write_cv_report

    for fold, auc in enumerate((0.6, 0.8, 1.0)):
        write_json(tmp_path / f"fold_{fold}" / "metrics.json",
                   {"fold": fold, "n_val": 4, "best": {"epoch": 1, "val_auc": auc, "train_loss": 0.1}})
    markdown, _, csv_path = write_cv_report(tmp_path)
    assert "| mean ± SD | 12 | 0.800 ± 0.200 |" in markdown  # sample SD of 0.6, 0.8, 1.0 is 0.2
    assert "train_loss" not in markdown
    assert float(csv_path.read_text(encoding="utf-8").splitlines()[-1].split(",")[2]) == pytest.approx(0.2)


def test_resume_without_a_checkpoint_is_refused_with_advice(tmp_path, cohort):
    with pytest.raises(CSpineInputError, match="no checkpoint to resume"):
        fit(load_config(write_config(tmp_path, cohort)), resume=True)


def test_cli_subcommands_parse_the_same_arguments_as_the_scripts(tmp_path, cohort, capsys):
    import argparse

    from cspineai.commands import evaluate, export, train

    parser = argparse.ArgumentParser(prog="cspineai")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (train, evaluate, export):
        module.register(subparsers)
    config = write_config(tmp_path, cohort, optim={"epochs": 1})
    args = parser.parse_args(["train", "--config", str(config), "--set", "log.tensorboard=false"])
    assert args.func(args) == 0
    args = parser.parse_args(["evaluate", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"),
                              "--split", "all", "--device", "cpu"])
    assert args.func(args) == 0
    assert "auc:" in capsys.readouterr().out


def test_train_script_finds_the_package_when_it_is_not_installed(tmp_path):
    # Slicer's interpreter does not have the package installed: the script must put the repository's Logic/ on
    # sys.path itself. `python -S` with site-packages on PYTHONPATH imports torch but skips the editable install's .pth.
    import site

    site_packages = [p for p in site.getsitepackages() if Path(p, "torch").is_dir()]
    if not site_packages:
        pytest.skip("torch's site-packages folder not found")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(site_packages)}
    probe = subprocess.run([sys.executable, "-S", "-c", "import cspineai"], cwd=tmp_path, env=env, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("cspineai is importable without site processing here")
    result = subprocess.run([sys.executable, "-S", str(REPO / "Training" / "train.py"), "--help"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout and "--resume" in result.stdout
