"""``cspineai predict``: per-case neck-pain probabilities as CSV, and its refusals of bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from cspineai.cli import main
from cspineai.manifest import read_manifest, write_manifest
from cspineai.tasks.pain import write_tiny_cohort

REPO = Path(__file__).resolve().parents[1]
THRESHOLD = 0.42


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_tiny_cohort(tmp_path_factory.mktemp("cohort"), n_cases=4, test_cases=2)


def _tiny_model_state() -> dict:
    from cspineai.training.config import resolve_config
    from cspineai.training.tasks import get_task

    config = resolve_config({"task": "pain", "model": {"widths": [4, 8, 8, 8]},
                             "task_options": {"sagittal_size": [8, 32, 32], "axial_size": [8, 32, 32]}}, "test")
    torch.manual_seed(0)
    model = get_task("pain").build_model(config)
    return {"model": model.state_dict(), "config": config, "fitted": {"threshold": THRESHOLD, "auc": 0.5}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "best.pt"
    torch.save(_tiny_model_state(), path)
    return path


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Path:
    """A user registry holding a tiny model under the default id (the shipped one stays untouched)."""
    from cspineai.models.registry import ModelEntry, sha256_file, write_registry
    from cspineai.prediction import DEFAULT_MODEL_ID as DEFAULT_MODEL

    folder = tmp_path / "models"
    folder.mkdir()
    torch.save({"format": "cspineai-model-1", "task": "pain", **_tiny_model_state()}, folder / "tiny.pt")
    entry = ModelEntry(id=f"{DEFAULT_MODEL}-test", task="pain", version="0.0.1", file="tiny.pt",
                       sha256=sha256_file(folder / "tiny.pt"), inputs=["T1_sag", "CT_bone"])
    write_registry(folder, [entry])
    monkeypatch.setenv("CSPINEAI_USER_MODELS", str(folder))
    return folder


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_writes_probability_and_label_at_the_models_threshold_for_every_case(cohort, checkpoint, tmp_path):
    out = tmp_path / "preds.csv"
    assert main(["predict", "--manifest", str(cohort), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["case_id"] for r in rows] == [c.case_id for c in read_manifest(cohort)]
    assert list(rows[0]) == ["case_id", "probability", "predicted", "threshold", "label"]
    for row in rows:
        probability = float(row["probability"])
        assert 0.0 <= probability <= 1.0
        assert int(row["predicted"]) == int(probability >= THRESHOLD)
        assert float(row["threshold"]) == pytest.approx(THRESHOLD)


def test_predicts_with_a_registered_model_and_only_the_requested_split(cohort, registry, tmp_path):
    from cspineai.prediction import DEFAULT_MODEL_ID as DEFAULT_MODEL

    out = tmp_path / "preds.csv"
    argv = ["predict", "--manifest", str(cohort), "--model", f"{DEFAULT_MODEL}-test", "--split", "test", "--out",
            str(out)]
    assert main(argv) == 0
    assert [r["case_id"] for r in _rows(out)] == ["tiny002", "tiny003"]


def test_predictions_match_predict_pain_on_the_same_case(cohort, checkpoint, tmp_path):
    from cspineai.commands.predict import load_pain_model
    from cspineai.io import read_volume
    from cspineai.prediction import predict_pain

    out = tmp_path / "preds.csv"
    main(["predict", "--manifest", str(cohort), "--checkpoint", str(checkpoint), "--out", str(out)])
    model, _, _ = load_pain_model(checkpoint=str(checkpoint))
    case = read_manifest(cohort)[1]
    direct = predict_pain({s: read_volume(case.paths[s]) for s in model.series}, model)
    assert float(_rows(out)[1]["probability"]) == pytest.approx(direct.probability, abs=1e-6)


def _refused_predict(cases, checkpoint, tmp_path, capsys) -> str:
    """``cspineai predict`` on ``cases``: exits 2, writes no output; returns what it printed on stderr."""
    manifest = write_manifest(cases, tmp_path / "manifest.csv")
    out = tmp_path / "preds.csv"
    assert main(["predict", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_reports_the_case_and_series_when_a_required_series_is_missing(cohort, checkpoint, tmp_path, capsys):
    cases = read_manifest(cohort)
    del cases[1].paths["CT_bone"]
    message = _refused_predict(cases, checkpoint, tmp_path, capsys)
    assert "tiny001" in message and "CT_bone series" in message


def test_reports_the_series_when_it_is_a_2d_image(cohort, checkpoint, tmp_path, capsys):
    from cspineai.io import write_volume
    from cspineai.volume import Volume

    cases = read_manifest(cohort)
    flat = Volume(np.zeros((1, 24, 24), dtype=np.float32) + np.arange(24, dtype=np.float32), (1.0, 1.0, 4.0),
                  (0.0, 0.0, 0.0), np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), "T1_sag")
    cases[0].paths["T1_sag"] = write_volume(flat, tmp_path / "flat_t1.nii.gz")
    message = _refused_predict(cases, checkpoint, tmp_path, capsys)
    assert "T1_sag series" in message and "2-D" in message


def test_refuses_a_model_of_another_task(cohort, tmp_path, capsys):
    from cspineai.training.config import resolve_config

    path = tmp_path / "toy.pt"
    from cspineai.tasks.toy import ToyNet

    torch.save({"model": ToyNet().state_dict(), "config": resolve_config({"task": "toy"}, "test")}, path)
    assert main(["predict", "--manifest", str(cohort), "--checkpoint", str(path), "--out",
                 str(tmp_path / "p.csv")]) == 2
    assert "not a neck-pain classifier" in capsys.readouterr().err
