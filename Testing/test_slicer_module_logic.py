"""The Slicer module's logic without Qt: command lines, child environment, input export, results, panel helpers."""

# The stand-ins below implement the module's camelCase interfaces (Slicer's naming), hence the names.
# ruff: noqa: N802, N803, N806

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

from cspineai import series as cspineai_series  # noqa: E402
from cspineai.volume import Volume  # noqa: E402
from CSpineAILib.Logic import (  # noqa: E402
    MODEL_ROLES,
    SALIENCY_METHODS,
    SERIES,
    STEPS,
    Logic,
    findPackageRoot,
    optionForSeries,
)
from CSpineAILib.ProcessRunner import ProcessRunner  # noqa: E402

PYTHON = "/opt/python/bin/python3"


class RecordingRunner:
    """Stands in for ProcessRunner: records what would be started."""

    def __init__(self):
        self.started: list[dict] = []

    def start(self, command, env=None, cwd=None):
        self.started.append({"command": list(command), "env": env, "cwd": cwd})


class RecordingSceneLoader:
    def __init__(self):
        self.loaded: list[Path] = []

    def loadResults(self, resultsDir):
        self.loaded.append(resultsDir)
        return {"transform": "a transform node"}


def _logic(tmp_path=None, **kwargs) -> Logic:
    defaults = {
        "packageRoot": REPO / "Logic",
        "pythonExecutable": PYTHON,
        "baseEnvironment": lambda: {"PATH": "/usr/bin", "PYTHONPATH": "/site/extra"},
        "cudaAvailable": lambda: False,
    }
    defaults.update(kwargs)
    return Logic(**defaults)


# ---- command lines ----------------------------------------------------------------------------------------------


def test_run_command_lists_series_steps_device_models_and_output_in_a_fixed_order():
    inputs = {"T1_sag": "/data/t1.nii.gz", "CT_bone": "/data/ct.nrrd"}  # given out of order on purpose
    command = _logic().buildRunCommand(
        inputs,
        "/results/case1",
        ["segment", "register", "predict"],
        "cpu",
        {"classifier": "pain-v2", "segmentation": ""},
    )
    assert command == [
        PYTHON, "-m", "cspineai", "run",
        "--ct-bone", "/data/ct.nrrd",
        "--t1-sag", "/data/t1.nii.gz",
        "--steps", "register,predict,segment",
        "--device", "cpu",
        "--model", "classifier=pain-v2",
        "--out", "/results/case1",
    ]  # fmt: skip


def test_saliency_method_is_passed_only_with_the_saliency_step():
    inputs = {"T1_sag": "/data/t1.nii.gz", "CT_bone": "/data/ct.nrrd"}
    with_map = _logic().buildRunCommand(inputs, "/out", ["predict", "saliency"], "cpu", {}, "gradcam")
    assert with_map[with_map.index("--saliency-method") + 1] == "gradcam"
    assert "--saliency-method" not in _logic().buildRunCommand(inputs, "/out", ["predict"], "cpu", {}, "gradcam")
    assert "--saliency-method" not in _logic().buildRunCommand(inputs, "/out", ["saliency"], "cpu", {}, "")
    with pytest.raises(ValueError, match="unknown saliency method"):
        _logic().buildRunCommand(inputs, "/out", ["saliency"], "cpu", {}, "grad-cam")


def test_saliency_methods_mirror_the_package_with_its_default_first():
    saliency = pytest.importorskip("cspineai.saliency")
    assert sorted(SALIENCY_METHODS) == sorted(saliency.METHODS)
    assert SALIENCY_METHODS[0] == saliency.DEFAULT_METHOD


def test_series_and_roles_mirror_the_package_names():
    assert SERIES == cspineai_series.SERIES
    assert [optionForSeries(s) for s in SERIES] == ["--ct-bone", "--ct-tissue", "--t1-sag", "--t2-sag", "--t2-tra"]


def test_steps_mirror_the_pipeline_steps_when_the_pipeline_exists():
    pipeline = pytest.importorskip("cspineai.pipeline", reason="cspineai.pipeline has not landed yet")
    assert tuple(pipeline.STEPS) == STEPS


@pytest.mark.parametrize(
    ("inputs", "steps", "device", "models", "message"),
    [
        ({"CT_soft": "/x"}, ["register"], "cpu", {}, "unknown series"),
        ({"CT_bone": "/x"}, [], "cpu", {}, "at least one step"),
        ({"CT_bone": "/x"}, ["registr"], "cpu", {}, "unknown steps"),
        ({"CT_bone": "/x"}, ["register"], "tpu", {}, "unknown device"),
        ({"CT_bone": "/x"}, ["register"], "cpu", {"detector": "m"}, "unknown model role"),
    ],
)
def test_run_command_rejects_what_the_pipeline_does_not_know(inputs, steps, device, models, message):
    with pytest.raises(ValueError, match=message):
        _logic().buildRunCommand(inputs, "/out", steps, device, models)


def test_training_command_overrides_manifest_output_and_device_of_the_configuration(tmp_path):
    root = tmp_path / "checkout"
    (root / "Logic" / "cspineai").mkdir(parents=True)
    (root / "Training").mkdir()
    (root / "Training" / "train.py").write_text("", encoding="utf-8")
    manifest, config = tmp_path / "cohort.csv", tmp_path / "pain.yaml"
    manifest.write_text("case_id\n", encoding="utf-8")
    config.write_text("task: pain\n", encoding="utf-8")
    command = _logic(packageRoot=root / "Logic").buildTrainingCommand(manifest, config, tmp_path / "run", "cuda")
    assert command == [
        PYTHON, str(root / "Training" / "train.py"),
        "--config", str(config),
        "--set", f"manifest={manifest}",
        "--set", f"output_dir={tmp_path / 'run'}",
        "--set", "device=cuda",
    ]  # fmt: skip


def test_training_command_fine_tunes_a_registry_model_when_given_one(tmp_path):
    manifest, config = tmp_path / "cohort.csv", tmp_path / "cordseg.yaml"
    manifest.write_text("case_id\n", encoding="utf-8")
    config.write_text("task: cordseg\n", encoding="utf-8")
    command = _logic().buildTrainingCommand(manifest, config, tmp_path / "run", "cpu", "cordseg-unet@1.0.0")
    assert command[-2:] == ["--set", "init_from=cordseg-unet@1.0.0"]
    fromScratch = _logic().buildTrainingCommand(manifest, config, tmp_path / "run", "cpu")
    assert not any(part.startswith("init_from=") for part in fromScratch)
    with pytest.raises(ValueError, match="registry id"):
        _logic().buildTrainingCommand(manifest, config, tmp_path / "run", "cpu", "cordseg unet; rm -rf /")


def test_fine_tuning_starts_from_the_models_section_choice_for_the_configurations_task(tmp_path):
    cordseg, toy = tmp_path / "cordseg.yaml", tmp_path / "toy.yaml"
    cordseg.write_text("task: cordseg\n", encoding="utf-8")
    toy.write_text("task: toy\n", encoding="utf-8")
    logic = _logic()
    assert logic.startingModel(cordseg, {"segmentation": "cordseg-site", "classifier": "pain-site"}) == "cordseg-site"
    assert logic.startingModel(cordseg, {"classifier": "pain-site"}) == "cordseg-unet"  # the role's default model
    assert logic.startingModel(toy, {"segmentation": "cordseg-site"}) == ""  # no role trains the toy task
    assert logic.startingModel(Path(), {}) == ""  # no configuration yet: the command builder reports it


def test_task_roles_invert_the_pipelines_role_tasks():
    from cspineai.pipeline import ROLE_TASKS
    from CSpineAILib.Logic import TASK_ROLES

    assert TASK_ROLES == {task: role for role, task in ROLE_TASKS.items()}


def test_training_command_names_the_missing_file(tmp_path):
    config = tmp_path / "pain.yaml"
    config.write_text("task: pain\n", encoding="utf-8")
    with pytest.raises(ValueError, match="existing manifest file"):
        _logic().buildTrainingCommand(tmp_path / "absent.csv", config, tmp_path / "run")
    with pytest.raises(ValueError, match="existing training configuration file"):
        _logic().buildTrainingCommand(config, Path(), tmp_path / "run")


def test_training_command_uses_the_checkouts_train_script():
    assert _logic().trainingScript() == REPO / "Training" / "train.py"


def test_add_model_command_registers_a_checkpoint_under_a_safe_id(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"")
    command = _logic().buildAddModelCommand(checkpoint, "pain-t1sag-ctbone-site")
    assert command == [
        PYTHON,
        "-m",
        "cspineai",
        "export",
        "--checkpoint",
        str(checkpoint),
        "--id",
        "pain-t1sag-ctbone-site",
    ]
    with pytest.raises(ValueError, match="model id"):
        _logic().buildAddModelCommand(checkpoint, "../../etc")


# ---- the child's environment ---------------------------------------------------------------------------------------


def test_child_environment_puts_the_package_root_first_on_pythonpath_once():
    env = _logic(baseEnvironment=lambda: {"PYTHONPATH": os.pathsep.join([str(REPO / "Logic"), "/site/extra"])})
    env = env.childEnvironment()
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO / "Logic"), "/site/extra"]
    assert env["PYTHONUNBUFFERED"] == "1"


def test_child_imports_cspineai_from_the_extensions_folder_before_any_installed_copy(tmp_path):
    marker = tmp_path / "root" / "cspineai"
    marker.mkdir(parents=True)
    (marker / "__init__.py").write_text("WHERE = 'extension folder'\n", encoding="utf-8")
    logic = _logic(
        packageRoot=tmp_path / "root", pythonExecutable=sys.executable, baseEnvironment=lambda: dict(os.environ)
    )
    done = subprocess.run(
        [sys.executable, "-c", "import cspineai; print(cspineai.WHERE)"],
        env=logic.childEnvironment(), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "extension folder"


def test_package_root_is_found_beside_the_module_in_a_source_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("CSPINEAI_LOGIC_DIR", raising=False)
    assert findPackageRoot() == (REPO / "Logic").resolve()
    monkeypatch.setenv("CSPINEAI_LOGIC_DIR", str(REPO / "Logic"))
    assert findPackageRoot(tmp_path) == (REPO / "Logic").resolve()


def test_missing_package_root_explains_how_to_add_the_module(monkeypatch, tmp_path):
    monkeypatch.delenv("CSPINEAI_LOGIC_DIR", raising=False)
    with pytest.raises(RuntimeError, match="additional module path"):
        findPackageRoot(tmp_path / "CSpineAI")


def test_training_run_streams_progress_through_the_runner_from_the_package_root(tmp_path):
    # A stand-in checkout whose train.py reports progress the way cspineai.training does.
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "Logic").symlink_to(REPO / "Logic")
    (root / "Training").mkdir()
    (root / "Training" / "train.py").write_text(
        "import os, sys\n"
        "from cspineai.progress import print_progress\n"
        "print_progress('train', 0.5, 'epoch 1/2')\n"
        "print('cwd', os.getcwd())\n"
        "print_progress('train', 1.0, 'epoch 2/2')\n"
    )
    manifest, config = tmp_path / "cohort.csv", tmp_path / "toy.yaml"
    manifest.write_text("case_id\n", encoding="utf-8")
    config.write_text("task: toy\n", encoding="utf-8")
    events: list = []
    runner = ProcessRunner(
        onProgress=lambda *a: events.append(("progress", *a)),
        onLog=lambda line: events.append(("log", line)),
        onFinished=lambda: events.append(("finished",)),
        onError=lambda message: events.append(("error", message)),
    )
    logic = _logic(
        packageRoot=root / "Logic", pythonExecutable=sys.executable, baseEnvironment=lambda: dict(os.environ)
    )
    logic.startTraining(manifest, config, tmp_path / "run", "cpu", runner)
    assert runner.wait(timeout=60)
    assert events == [
        ("progress", "train", 0.5, "epoch 1/2"),
        ("log", f"cwd {os.path.realpath(root)}"),
        ("progress", "train", 1.0, "epoch 2/2"),
        ("finished",),
    ]


# ---- starting a case from scene nodes ------------------------------------------------------------------------------


@pytest.fixture
def scene():
    pytest.importorskip("slicer")
    from cspineai.scene import create_context

    return create_context().scene


def _volume_node(scene, tmp_path, name: str):
    from cspineai.io import write_volume
    from cspineai.scene import SlicerContext, read_volume_node

    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    direction = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # a sagittal acquisition
    volume = Volume(array, spacing=(0.8, 0.9, 3.0), origin=(10.0, -20.0, 30.0), direction=direction)
    path = write_volume(volume, tmp_path / "source.nii.gz")
    return read_volume_node(path, name, context=SlicerContext(scene)), volume


def test_start_case_exports_nodes_named_by_series_and_starts_the_pipeline(scene, tmp_path):
    from cspineai.geometry import physically_equal
    from cspineai.io import read_volume

    node, volume = _volume_node(scene, tmp_path, "DOE^JANE 3: T1 SAG")
    runner, loader = RecordingRunner(), RecordingSceneLoader()
    logic = _logic(sceneLoader=loader)
    command = logic.startCase({"T1_sag": node, "CT_bone": "/data/ct.nrrd", "T2_sag": None}, tmp_path / "out",
                              ["predict"], "cpu", {}, runner)  # fmt: skip

    assert runner.started[0]["command"] == command
    exported = Path(command[command.index("--t1-sag") + 1])
    assert exported.name == "T1_sag.nrrd" and "--t2-sag" not in command
    assert b"DOE" not in exported.read_bytes(), "the node name (a patient name) must not reach the file"
    assert physically_equal(read_volume(exported), volume)
    assert runner.started[0]["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(REPO / "Logic")

    assert logic.finishCase(tmp_path / "out") == {"transform": "a transform node"}
    assert loader.loaded == [tmp_path / "out"]
    assert not exported.exists(), "exported copies of patient images must be removed after the run"


def test_start_case_refuses_a_volume_under_a_transform(scene, tmp_path):
    node, _ = _volume_node(scene, tmp_path, "ct")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="CT_bone: the selected volume is under a transform"):
        _logic().startCase({"CT_bone": node}, tmp_path / "out", ["register"], "cpu", {}, RecordingRunner())


def test_start_case_requires_an_output_folder():
    with pytest.raises(ValueError, match="output folder"):
        _logic().startCase({"CT_bone": "/x"}, Path(), ["register"], "cpu", {}, RecordingRunner())


# ---- panel helpers ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "series"),
    [
        ("CT_bone", "CT_bone"),
        ("3: CT Bone 1.0 B70f", "CT_bone"),
        ("ct_tissue", "CT_tissue"),
        ("4: CT soft tissue", "CT_tissue"),
        ("5: T1_TSE_SAG", "T1_sag"),
        ("sag T1 FSE", "T1_sag"),
        ("6: t2_tse_sag_384", "T2_sag"),
        ("7: T2 TSE TRA", "T2_tra"),
        ("t2_ax_c2-t1", "T2_tra"),
        ("Scout", None),
        ("DWI ADC", None),
    ],
)
def test_series_is_guessed_from_the_series_description(name, series):
    assert Logic.guessSeries(name) == series


def test_device_falls_back_to_cpu_with_a_note_when_cuda_is_absent():
    assert _logic(cudaAvailable=lambda: False).resolveDevice("cuda")[0] == "cpu"
    assert "CPU instead" in _logic(cudaAvailable=lambda: False).resolveDevice("cuda")[1]
    assert _logic(cudaAvailable=lambda: False).resolveDevice("auto") == ("cpu", "")
    assert _logic(cudaAvailable=lambda: True).resolveDevice("auto") == ("cuda", "")
    assert _logic(cudaAvailable=lambda: True).resolveDevice("cpu") == ("cpu", "")


def test_prediction_and_risk_text_come_from_report_json(tmp_path):
    assert Logic.readPrediction(tmp_path) is None
    report = {"prediction": {"probability": 0.72, "threshold": 0.4}}
    (tmp_path / "report.json").write_text(json.dumps(report), encoding="utf-8")
    prediction = Logic.readPrediction(tmp_path)
    assert Logic.riskText(prediction) == "Postoperative neck pain likely (p = 0.72, threshold 0.40)"
    assert "unlikely" in Logic.riskText({"probability": 0.2, "threshold": 0.4})
    (tmp_path / "report.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="report.json"):
        Logic.readPrediction(tmp_path)


def test_model_list_reads_the_registry_with_roles(monkeypatch, tmp_path):
    monkeypatch.setenv("CSPINEAI_USER_MODELS", str(tmp_path))
    (tmp_path / "Models.json").write_text(json.dumps({
        "format": "cspineai-models-1",
        "models": [{"id": "pain-site", "task": "pain", "version": "1.0.0", "file": "m.pt", "sha256": "0" * 64}],
    }), encoding="utf-8")  # fmt: skip
    models = {model["id"]: model for model in _logic().listModels()}
    assert models["pain-site"]["role"] == "classifier" and models["pain-site"]["source"] == "user"
    assert set(MODEL_ROLES) >= {model["role"] for model in models.values() if model["role"]}


def test_default_scene_loader_passes_the_results_folder_and_context_to_the_scene_layer(monkeypatch, tmp_path):
    import cspineai.scene
    from CSpineAILib.Logic import DefaultSceneLoader

    calls = []
    monkeypatch.setattr(
        cspineai.scene, "load_results", lambda folder, **kwargs: calls.append((folder, kwargs)) or {}, raising=False
    )
    DefaultSceneLoader().loadResults(str(tmp_path))
    DefaultSceneLoader(context="ctx").loadResults(tmp_path)
    assert calls == [(tmp_path, {}), (tmp_path, {"context": "ctx"})]
