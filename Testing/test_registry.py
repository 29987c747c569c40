"""The model registry: shipped list, export of a checkpoint, hash check on load, user registry merged in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cspineai.errors import CSpineInputError, CSpineModelError
from cspineai.models import registry
from cspineai.tasks.toy import write_toy_cohort
from cspineai.training.config import load_config
from cspineai.training.loop import fit
from cspineai.training.main import evaluate_main, export_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(best checkpoint, manifest) of a two-epoch toy run with EMA."""
    folder = tmp_path_factory.mktemp("registry")
    manifest = write_toy_cohort(folder / "cohort", n_cases=8, shape=(6, 12, 12))
    raw = yaml.safe_load((REPO / "Training" / "configs" / "toy.yaml").read_text(encoding="utf-8"))
    raw.update(manifest=str(manifest), output_dir=str(folder / "run"), device="cpu")
    raw["optim"].update(epochs=2, ema=0.5)
    raw["log"]["tensorboard"] = False
    (folder / "config.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    fit(load_config(folder / "config.yaml"))
    return folder / "run" / "checkpoints" / "best.pt", manifest


@pytest.fixture
def user_registry(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "user-models"
    monkeypatch.setenv("CSPINEAI_USER_MODELS", str(folder))
    return folder


def test_shipped_registry_is_valid_json_that_lists_intact_models():
    data = json.loads((registry.shipped_dir() / "Models.json").read_text(encoding="utf-8"))
    assert data["format"] == registry.REGISTRY_FORMAT
    for entry in registry.read_registry(registry.shipped_dir(), "shipped"):
        registry.verify(entry)  # every shipped file exists and matches its hash
        assert entry.path.stat().st_size < 20 * 2**20


def test_export_registers_a_checkpoint_with_a_model_card(trained, user_registry):
    checkpoint, _ = trained
    entry = registry.export_model(checkpoint, "toy-site", "1.2.0", training_data="8 synthetic toy volumes",
                                  training_command="python Training/train.py --config Training/configs/toy.yaml")
    assert entry.source == "user" and entry.path == user_registry / "toy-site-1.2.0.pt"
    assert entry.sha256 == registry.sha256_file(entry.path)
    assert entry.inputs == ["T1_sag"] and "auc" in entry.metrics
    card = (user_registry / entry.card).read_text(encoding="utf-8")
    assert "# toy-site 1.2.0" in card and entry.sha256 in card and "8 synthetic toy volumes" in card
    listed = [e for e in registry.list_models() if e.id == "toy-site"]
    assert len(listed) == 1 and listed[0].version == "1.2.0"


def test_exported_model_loads_with_ema_weights_and_scores_like_the_checkpoint(trained, user_registry):
    checkpoint, _ = trained
    registry.export_model(checkpoint, "toy-ema")
    model, entry, state = registry.load_model("toy-ema")
    ema = torch.load(checkpoint, weights_only=True)["ema"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, ema[f"module.{key}"])
    assert not model.training and "threshold" in state["fitted"]


def test_a_registry_entry_with_a_wrong_hash_is_refused(trained, user_registry):
    checkpoint, _ = trained
    entry = registry.export_model(checkpoint, "toy-tampered")
    with open(entry.path, "ab") as f:
        f.write(b"\0")  # one byte appended: a truncated or altered download looks like this
    with pytest.raises(CSpineModelError, match=r"toy-tampered-1\.0\.0\.pt: SHA-256 .* does not match"):
        registry.load_model("toy-tampered")


def test_export_refuses_to_replace_an_existing_version_unless_asked(trained, user_registry):
    checkpoint, _ = trained
    registry.export_model(checkpoint, "toy-twice")
    with pytest.raises(CSpineInputError, match="already lists toy-twice 1.0.0"):
        registry.export_model(checkpoint, "toy-twice")
    registry.export_model(checkpoint, "toy-twice", overwrite=True)
    assert [e.id for e in registry.list_models()].count("toy-twice") == 1


def test_find_model_picks_the_highest_version_and_names_known_models(trained, user_registry):
    checkpoint, _ = trained
    for version in ("1.9.0", "1.10.0"):
        registry.export_model(checkpoint, "toy-versions", version)
    assert registry.find_model("toy-versions").version == "1.10.0"
    assert registry.find_model("toy-versions@1.9.0").version == "1.9.0"
    with pytest.raises(CSpineModelError, match="no registered model nope .*toy-versions"):
        registry.find_model("nope")


def test_malformed_registry_entries_are_refused_naming_the_file(tmp_path):
    (tmp_path / "Models.json").write_text(json.dumps({"models": [{"id": "x", "task": "toy"}]}), encoding="utf-8")
    with pytest.raises(CSpineModelError, match=r"Models\.json, model 1: missing version, file, sha256"):
        registry.read_registry(tmp_path)


def test_export_and_evaluate_entry_points_work_on_a_registered_model(trained, user_registry, capsys):
    checkpoint, manifest = trained
    assert export_main(["--checkpoint", str(checkpoint), "--id", "toy-cli", "--version", "2.0.0"]) == 0
    assert export_main(["--list"]) == 0
    assert "toy-cli 2.0.0 [user]" in capsys.readouterr().out
    assert evaluate_main(["--model", "toy-cli", "--manifest", str(manifest), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "n_cases: 8" in out and "auc:" in out


# --- averaged weights ("model soup") -----------------------------------------------------------------------------
def test_average_weights_is_the_mean_in_each_dtype_and_refuses_another_architecture():
    from cspineai.training.checkpoint import average_weights

    a = {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.float16), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([2.0], dtype=torch.float16), "n": torch.tensor(7)}
    mean = average_weights([a, b], ["a", "b"])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0]))
    assert mean["h"].dtype == torch.float16 and float(mean["h"]) == 1.5
    assert int(mean["n"]) == 3  # a counter is not averaged: the first model's
    with pytest.raises(CSpineModelError, match=r"b: w is \(3,\), \(2,\) in a"):
        average_weights([a, {**b, "w": torch.zeros(3)}], ["a", "b"])
    with pytest.raises(CSpineModelError, match="b: not the architecture of a .*h missing"):
        average_weights([a, {"w": b["w"], "n": b["n"]}], ["a", "b"])
    with pytest.raises(CSpineModelError, match="at least two"):
        average_weights([a], ["a"])


def test_export_registers_the_average_of_a_model_and_another_and_its_card_names_both(user_registry, tmp_path):
    shipped = registry.find_model("cordseg-unet@1.2.0")
    state = torch.load(shipped.path, weights_only=True)
    other = {**state, "model": {k: v * 3 if v.is_floating_point() else v for k, v in state["model"].items()}}
    torch.save(other, tmp_path / "tripled.pt")
    entry = registry.export_model(shipped.path, "cordseg-soup", average_with=[str(tmp_path / "tripled.pt")])
    averaged = torch.load(entry.path, weights_only=True)
    for key, value in state["model"].items():
        expected = value * 2 if value.is_floating_point() else value  # the mean of w and 3w
        assert torch.allclose(averaged["model"][key], expected, rtol=1e-6), key
    assert averaged["fitted"] == {} and entry.metrics == {}  # nobody validated the mean
    tripled = registry.sha256_file(tmp_path / "tripled.pt")
    assert [a["sha256"] for a in averaged["averaged"]] == [shipped.sha256, tripled]
    card = (user_registry / entry.card).read_text(encoding="utf-8")
    assert "uniform average of" in card and shipped.sha256[:16] in card and "tripled.pt" in card
    # 1.1.0 reads one slice, 1.2.0 five: the input kernels differ
    with pytest.raises(CSpineModelError, match=r"cordseg-unet 1\.1\.0: .* is \(16, 1, 3, 3\), .*do not share an"):
        registry.export_model(shipped.path, "cordseg-mixed", average_with=["cordseg-unet@1.1.0"])


def test_export_refuses_to_average_a_classifier_whose_threshold_belongs_to_its_own_weights(trained, user_registry):
    checkpoint, _ = trained
    with pytest.raises(CSpineInputError, match="operating threshold"):
        registry.export_model(checkpoint, "toy-soup", average_with=[str(checkpoint)])
    assert not (user_registry / "toy-soup-1.0.0.pt").exists()
