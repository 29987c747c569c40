"""Fine-tuning starts from a trained model: ``init_from`` names a registered model or a ``.pt`` file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from cspineai.errors import CSpineInputError, CSpineModelError
from cspineai.models import registry
from cspineai.tasks.toy import write_toy_cohort
from cspineai.training.checkpoint import load_checkpoint
from cspineai.training.config import load_config
from cspineai.training.loop import fit
from cspineai.training.main import train_main

REPO = Path(__file__).resolve().parents[1]
TOY_CONFIG = REPO / "Training" / "configs" / "toy.yaml"


def write_config(folder: Path, manifest: Path, **optim) -> Path:
    """toy.yaml (model width 8) on ``manifest``, one epoch, output in ``folder/run``."""
    raw = yaml.safe_load(TOY_CONFIG.read_text(encoding="utf-8"))
    raw.update(manifest=str(manifest), output_dir=str(folder / "run"), device="cpu")
    raw["optim"].update(epochs=1, **optim)
    raw["log"]["tensorboard"] = False
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return folder / "config.yaml"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    """(best.pt, manifest) of a one-epoch toy run of width 4 (not toy.yaml's 8: the model section must follow it)."""
    folder = tmp_path_factory.mktemp("init-from")
    manifest = write_toy_cohort(folder / "cohort", n_cases=8, shape=(6, 12, 12))
    fit(load_config(write_config(folder / "source", manifest), ["model.width=4"]))
    return folder / "source" / "run" / "checkpoints" / "best.pt", manifest


@pytest.fixture
def user_registry(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "user-models"
    monkeypatch.setenv("CSPINEAI_USER_MODELS", str(folder))
    return folder


def _weights_at_the_first_step(monkeypatch) -> list:
    """Records the parameters the optimiser is built on (the weights of step 0)."""
    seen: list = []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            params = list(params)
            seen.extend(p.detach().clone() for p in params)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    return seen


def test_a_run_started_from_a_checkpoint_begins_with_its_weights_and_records_them(source, tmp_path, monkeypatch,
                                                                                  capsys):
    checkpoint, manifest = source
    seen = _weights_at_the_first_step(monkeypatch)
    config = load_config(write_config(tmp_path, manifest), [f"init_from={checkpoint}"])
    assert config["init_from"] == str(checkpoint) and config["model"]["width"] == 4  # toy.yaml says 8
    fit(config)
    expected = list(load_checkpoint(checkpoint)["model"].values())
    assert len(seen) == len(expected) and all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))
    sha = registry.sha256_file(checkpoint)
    assert f"initialised from {checkpoint} (sha256 {sha[:12]})" in capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["init_from"] == str(checkpoint)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["init"]["sha256"] == sha


def test_a_registered_model_starts_a_run_after_its_hash_check_and_its_card_says_so(source, tmp_path, user_registry,
                                                                                    capsys):
    checkpoint, manifest = source
    entry = registry.export_model(checkpoint, "toy-site", "1.1.0")
    config = load_config(write_config(tmp_path / "a", manifest), ["init_from=toy-site@1.1.0", "model.dropout=0.5"])
    assert config["model"] == {"width": 4, "dropout": 0.5}  # the model's width, the override's dropout
    fit(config)
    assert f"registered model toy-site 1.1.0 (sha256 {entry.sha256[:12]})" in capsys.readouterr().out
    tuned = registry.export_model(tmp_path / "a" / "run" / "checkpoints" / "best.pt", "toy-site-tuned")
    card = (user_registry / tuned.card).read_text(encoding="utf-8")
    assert f"Initialisation: fine-tuned from registered model `toy-site` 1.1.0 (SHA-256 `{entry.sha256[:16]}" in card

    with entry.path.open("r+b") as f:  # the registered file altered after registration
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(CSpineModelError, match="SHA-256 .* does not match"):
        load_config(write_config(tmp_path / "b", manifest), ["init_from=toy-site"])
    with pytest.raises(CSpineModelError, match="SHA-256 .* does not match"):
        fit({**config, "output_dir": str(tmp_path / "c")})


def test_weights_of_another_shape_are_refused_naming_keys_shapes_and_the_setting(source, tmp_path, capsys):
    checkpoint, manifest = source
    status = train_main(["--config", str(write_config(tmp_path, manifest)), "--set", f"init_from={checkpoint}",
                         "--set", "model.width=8"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"init_from {checkpoint}: the weights do not fit this run's toy model" in err
    assert "features.0.weight is (4, 1, 3, 3, 3) in the file, (8, 1, 3, 3, 3) in the model" in err
    assert "model.width is 8 here, 4 there" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_model_of_another_task_is_refused_by_name(source, tmp_path):
    checkpoint, _ = source
    cordseg = REPO / "Training" / "configs" / "cordseg.yaml"
    with pytest.raises(CSpineModelError, match="pain-abpdc-t1sag-ctbone [0-9.]+ is a pain model and cannot start a "
                                               r"cordseg run; choose a cordseg model \(cordseg-unet\)"):
        load_config(cordseg, ["init_from=pain-abpdc-t1sag-ctbone"])
    with pytest.raises(CSpineModelError, match="is a toy model and cannot start a cordseg run"):
        load_config(cordseg, [f"init_from={checkpoint}"])


def test_the_slice_context_of_a_segmentation_model_follows_it_like_its_network():
    # cordseg.yaml says context_slices 0; the shipped 1.2.0 was trained with 2 (its input has 5 channels), 1.1.0 with 0.
    from cspineai.training.init_from import initialise_weights
    from cspineai.training.tasks import get_task

    cordseg = REPO / "Training" / "configs" / "cordseg.yaml"
    config = load_config(cordseg, ["init_from=cordseg-unet@1.2.0"])
    assert config["task_options"]["context_slices"] == 2 and config["model"]["network"] == "unet"
    initialise_weights(get_task("cordseg").build_model(config), config)  # the weights fit: no error
    assert load_config(cordseg, ["init_from=cordseg-unet@1.1.0"])["task_options"]["context_slices"] == 0
    widened = load_config(cordseg, ["init_from=cordseg-unet@1.1.0", "task_options.context_slices=2"])
    assert widened["task_options"]["context_slices"] == 2  # --set wins: 1.1.0 fine-tunes into slice context
    initialise_weights(get_task("cordseg").build_model(widened), widened)


def test_init_from_names_must_exist_and_be_text(tmp_path):
    with pytest.raises(CSpineModelError, match="no registered model no-such-model"):
        load_config(TOY_CONFIG, ["init_from=no-such-model"])
    with pytest.raises(CSpineModelError, match="init_from .*absent.pt: file not found"):
        load_config(TOY_CONFIG, [f"init_from={tmp_path / 'absent.pt'}"])
    with pytest.raises(CSpineInputError, match="init_from must be a registered model id"):
        load_config(TOY_CONFIG, ["init_from=3"])
    assert load_config(TOY_CONFIG, ["init_from="])["init_from"] is None


def test_resume_continues_from_its_own_checkpoint_without_reading_init_from(source, tmp_path, capsys):
    checkpoint, manifest = source
    start = tmp_path / "start.pt"
    shutil.copy(checkpoint, start)
    config_file = write_config(tmp_path, manifest)
    fit(load_config(config_file, [f"init_from={start}"]))
    record = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["init"]
    start.unlink()  # were init_from read again, the resumption would fail
    capsys.readouterr()
    assert train_main(["--config", str(config_file), "--set", f"init_from={start}", "--set", "optim.epochs=2",
                       "--resume"]) == 0
    assert "initialised from" not in capsys.readouterr().out
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["init"] == record and state["config"]["model"]["width"] == 4


def test_the_shipped_classifier_fine_tunes_on_labels_alone_without_its_training_only_head(tmp_path):
    """A site has no synthetic findings: starting from the shipped pain model (trained with its auxiliary head) with
    ``aux_findings=0`` builds a model without that head and loads every other weight exactly."""
    from cspineai.models.registry import find_model, load_model_state
    from cspineai.tasks.pain import PainTask
    from cspineai.training.init_from import initialise_weights

    config = load_config(REPO / "Training" / "configs" / "pain_cpu.yaml",
                         ["init_from=pain-abpdc-t1sag-ctbone", "task_options.aux_findings=0"])
    model = PainTask().build_model(config)
    assert model.aux_head is None
    initialise_weights(model, config)
    shipped = load_model_state(find_model("pain-abpdc-t1sag-ctbone"))["model"]
    assert any(k.startswith("aux_head.") for k in shipped)
    for key, value in model.state_dict().items():
        assert torch.equal(value, shipped[key]), key
