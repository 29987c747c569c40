"""``cspineai run`` end to end in a child process, as the Slicer module starts it: progress lines, results, refusals.

While no classifier or segmentation model is registered (``Models.json`` is empty until the trained weights land),
the child runs the registration step with the model-free ``identity`` method; the steps with networks are covered
in-process by ``test_pipeline.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cspineai.io import write_volume
from cspineai.pipeline import DEFAULT_MODEL_IDS, bundled_case
from cspineai.progress import parse_progress_line

REPO = Path(__file__).resolve().parents[1]
#: A folder name that looks like a patient's: it must not reach any output.
PATIENT_FOLDER = "DOE^JANE_1234567"


@pytest.fixture(scope="module")
def input_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs") / PATIENT_FOLDER
    case = bundled_case()
    return {name: write_volume(case.series[name], folder / f"{name}.nrrd") for name in ("CT_bone", "T1_sag")}


def _run(args, tmp_path, timeout=300):
    env = dict(os.environ, CSPINEAI_USER_MODELS=str(tmp_path / "user-models"), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "Logic"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "cspineai", "run", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.slow
def test_run_writes_the_results_folder_and_streams_progress_lines(input_files, tmp_path):
    out = tmp_path / "results"
    done = _run(["--ct-bone", input_files["CT_bone"], "--t1-sag", input_files["T1_sag"], "--steps", "register",
                 "--model", "registration=identity", "--device", "cpu", "--out", out], tmp_path)
    assert done.returncode == 0, done.stderr
    updates = [parse_progress_line(line) for line in done.stdout.splitlines()]
    updates = [u for u in updates if u is not None]
    assert [u[0] for u in updates][0] == "register" and updates[-1][1] == 1.0
    assert [u[1] for u in updates] == sorted(u[1] for u in updates)
    assert f"results: {out}" in done.stdout

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["registration"]["method"] == "identity" and report["series_used"]["register"] == ["CT_bone", "T1_sag"]
    assert report["models"]["registration"]["id"] == "identity"
    assert {p.name for p in out.iterdir()} >= {"warped_ct.nrrd", "displacement_lps.nrrd", "report.json", "report.png",
                                                "report.pdf", "case.mrb", "views.png"}
    # No patient identifier: neither in the plain files nor in any file inside the scene bundle.
    for path in out.iterdir():
        if path.suffix in (".json", ".csv", ".nrrd"):
            assert b"DOE" not in path.read_bytes(), path.name
    with zipfile.ZipFile(out / "case.mrb") as bundle:
        for name in bundle.namelist():
            assert "DOE" not in name and b"DOE" not in bundle.read(name), name


def test_run_refuses_a_missing_model_and_a_missing_series_before_any_work(input_files, tmp_path):
    out = tmp_path / "results"
    done = _run(["--ct-bone", input_files["CT_bone"], "--t1-sag", input_files["T1_sag"], "--steps", "predict",
                 "--model", "classifier=no-such-classifier", "--out", out], tmp_path)
    assert done.returncode == 2 and "error:" in done.stderr and "classifier model 'no-such-classifier'" in done.stderr
    assert "[cspineai-progress]" not in done.stdout and not out.exists()

    done = _run(["--t1-sag", input_files["T1_sag"], "--steps", "register", "--model", "registration=identity",
                 "--out", out], tmp_path)
    assert done.returncode == 2 and "CT_bone or CT_tissue series" in done.stderr and "'register'" in done.stderr
    assert not out.exists()


def test_run_rejects_a_malformed_model_option(input_files, tmp_path):
    done = _run(["--t1-sag", input_files["T1_sag"], "--steps", "register", "--model", "warp=x", "--out",
                 tmp_path / "r"], tmp_path)
    assert done.returncode == 2 and "unknown role 'warp'" in done.stderr


def test_demo_refuses_at_once_naming_the_shipped_models_that_are_missing(tmp_path, monkeypatch, capsys):
    from cspineai.cli import main
    from cspineai.models import registry

    monkeypatch.setenv("CSPINEAI_USER_MODELS", str(tmp_path / "user-models"))
    monkeypatch.setattr(registry, "shipped_dir", lambda: tmp_path / "no-shipped-models")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert all(f"model '{model_id}'" in err for model_id in DEFAULT_MODEL_IDS.values())
    assert not (tmp_path / "demo").exists()


def test_the_slicer_modules_command_line_parses_as_cspineai_run(tmp_path):
    from cspineai.cli import build_parser
    from CSpineAILib.Logic import Logic
    logic = Logic(packageRoot=REPO / "Logic", pythonExecutable=sys.executable)
    inputs = {"CT_bone": tmp_path / "ct.nrrd", "T2_sag": tmp_path / "t2.nrrd", "T2_tra": tmp_path / "tra.nrrd"}
    command = logic.buildRunCommand(inputs, tmp_path / "out", ["segment", "register", "measure"], "cuda",
                                    {"classifier": "my-model", "segmentation": "seg-2"})
    assert command[1:4] == ["-m", "cspineai", "run"]
    args = build_parser().parse_args(command[3:])
    assert args.func.__module__ == "cspineai.commands.run"
    assert (args.CT_bone, args.T2_sag, args.T2_tra) == tuple(str(inputs[s]) for s in ("CT_bone", "T2_sag", "T2_tra"))
    assert args.steps == "register,segment,measure" and args.device == "cuda" and args.out == str(tmp_path / "out")
    from cspineai.commands.run import parse_models

    assert parse_models(args.model) == {"classifier": "my-model", "segmentation": "seg-2"}
