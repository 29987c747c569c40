"""The one-case pipeline: every step on a generated case, the results folder, refusals before any work, cancellation.

The networks are untrained small ones and an oracle segmenter (see ``test_pipeline_fixtures``): these tests check the
plumbing (grids, files, report, scene), not the models' accuracy.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from cspineai.errors import CSpineCancelled, CSpineInputError, CSpineModelError
from cspineai.geometry import same_grid
from cspineai.io import read_volume
from cspineai.pipeline import (
    STEPS,
    CaseInputs,
    PipelineModel,
    bundled_case,
    check_steps,
    run_case,
    run_to_folder,
    write_results,
)
from cspineai.progress import CancelToken
from test_pipeline_fixtures import small_models


@pytest.fixture(autouse=True)
def empty_user_registry(tmp_path, monkeypatch):
    """No model of the machine's own user registry may leak into a test."""
    monkeypatch.setenv("CSPINEAI_USER_MODELS", str(tmp_path / "user-models"))


@pytest.fixture(scope="module")
def case():
    return bundled_case()


@pytest.fixture(scope="module")
def finished(case, tmp_path_factory):
    """All steps on the bundled case, written with its scene bundle: (result, written files, progress calls).

    About 15 s alone on 2 CPU cores, much more under load: the tests using it are marked slow."""
    calls = []
    out = tmp_path_factory.mktemp("pipeline") / "results"
    result, written = run_to_folder(case.series, out, STEPS, small_models(case), "cpu",
                                    progress=lambda *call: calls.append(call))
    return result, written, calls


@pytest.mark.slow
def test_all_steps_run_in_order_with_progress_that_only_grows(finished):
    result, _, calls = finished
    assert result.steps == STEPS
    assert set(result.timings) >= {*STEPS, "read", "total"}
    steps_seen = list(dict.fromkeys(step for step, _, _ in calls if step != "write"))
    assert steps_seen == list(STEPS)
    fractions = [fraction for _, fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0


@pytest.mark.slow
def test_results_lie_on_the_grids_of_the_series_they_belong_to(finished, case):
    result, written, _ = finished
    assert result.plan["register"] == ["CT_bone", "T1_sag"] and result.plan["segment"] == ["T2_sag"]
    warped = read_volume(written["warped_ct"])
    assert same_grid(warped, case.series["T1_sag"])
    for series in ("CT_bone", "T1_sag"):
        heatmap = read_volume(written[f"heatmap {series}"])
        assert same_grid(heatmap, case.series[series])
        assert heatmap.array.min() >= 0.0 and heatmap.array.max() == pytest.approx(1.0)
    labels = read_volume(written["segmentation"])
    assert same_grid(labels, case.series["T2_sag"])
    assert set(np.unique(labels.array)) <= {0, 1, 2, *range(3, 10)}
    # The oracle segmenter gives the phantom's cord, so the pipeline's resampling must hand it back nearly unchanged.
    truth, found = case.labels["T2_sag"].array == 1, labels.array == 1
    dice = 2 * np.count_nonzero(truth & found) / (np.count_nonzero(truth) + np.count_nonzero(found))
    assert dice > 0.9


@pytest.mark.slow
def test_displacement_file_holds_the_registration_field_in_lps_on_the_mri_grid(finished, case):
    import SimpleITK as sitk

    result, written, _ = finished
    image = sitk.ReadImage(str(written["displacement"]))
    field = sitk.GetArrayFromImage(image)
    assert field.shape == (*case.series["T1_sag"].shape, 3)
    np.testing.assert_allclose(field, result.registration.displacement_lps, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), case.series["T1_sag"].spacing)


@pytest.mark.slow
def test_morphometry_csvs_and_plot_are_written_with_units(finished):
    _, written, _ = finished
    header = written["morphometry slices"].read_text(encoding="utf-8").splitlines()[0].split(",")
    assert {"csa_mm2", "level", "distance_from_top_mm"} <= set(header)
    assert written["morphometry plot"].stat().st_size > 0 and written["morphometry levels"].is_file()


@pytest.mark.slow
def test_report_json_has_prediction_threshold_models_and_timings_and_no_identifiers(finished, case):
    result, written, _ = finished
    report = json.loads(written["report.json"].read_text(encoding="utf-8"))
    prediction = report["prediction"]
    assert prediction["probability"] == pytest.approx(result.prediction.probability, abs=1e-6)
    assert prediction["threshold"] == 0.4 and prediction["threshold_source"] == "model"
    assert prediction["predicted_pain"] == (prediction["probability"] >= 0.4)
    assert "ranking score" in prediction["calibration"]
    assert set(report["models"]) == {"registration", "classifier", "segmentation"}
    assert report["models"]["classifier"] == {"id": "test-classifier", "version": "", "sha256": ""}
    segmentation_config = result.models["segmentation"].options["config"]
    assert report["models"]["segmentation"]["intensity_weight"] == segmentation_config.intensity_weight
    assert set(report["timings_s"]) >= set(STEPS)
    assert report["saliency"]["method"] == "integrated_gradients"  # cspineai.saliency.DEFAULT_METHOD, not given
    assert report["saliency"]["smooth_mm"] == 8.0
    assert report["software"]["cspineai"]
    assert 20 < report["morphometry"]["csa_mean_mm2"] < 150
    text = written["report.json"].read_text(encoding="utf-8")
    for field in ("PatientName", "PatientID", "StudyDate", "/tmp", "tmp_path"):
        assert field not in text


@pytest.mark.slow
def test_report_figure_is_written_as_png_and_pdf(finished):
    _, written, _ = finished
    assert written["report.png"].read_bytes()[:4] == b"\x89PNG"
    assert written["report.pdf"].read_bytes()[:4] == b"%PDF"


@pytest.mark.slow
def test_scene_bundle_reloads_in_a_fresh_scene_with_every_node_of_the_case(finished):
    slicer = pytest.importorskip("slicer")  # noqa: F841
    from cspineai.scene import create_context, load_results, table_node_to_columns
    from cspineai.scene.segmentations import segment_infos

    _, written, _ = finished
    assert zipfile.is_zipfile(written["case.mrb"])
    context = create_context()
    nodes = load_results(written["case.mrb"].parent, context=context)
    assert nodes["ct"].GetName() == "CT_bone" and nodes["mri"].GetName() == "T1_sag"
    assert nodes["ct"].GetParentTransformNode() is nodes["transform"]
    assert nodes["transform"].IsA("vtkMRMLGridTransformNode")
    heatmap_display = nodes["heatmap"].GetDisplayNode()
    assert nodes["heatmap"].GetName() == "T1_sag heatmap" and heatmap_display.GetColorNode() is not None
    composite = context.scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetItemAsObject(0)
    assert composite.GetForegroundVolumeID() == nodes["heatmap"].GetID()
    assert composite.GetBackgroundVolumeID() == nodes["mri"].GetID()
    cord = next(info for info in segment_infos(nodes["segmentation"]) if info.name == "spinal cord")
    assert cord.terminology is not None
    columns = table_node_to_columns(nodes["morphometry"])
    assert np.nanmedian(columns["csa_mm2"]) > 20
    assert nodes["morphometry"].GetColumnUnitLabel("csa_mm2") == "mm2"
    chart = nodes["plot"]
    assert chart.GetNumberOfPlotSeriesNodes() == 1
    assert chart.GetNthPlotSeriesNode(0).GetTableNode() is nodes["morphometry"]


def test_steps_are_put_in_pipeline_order_and_measure_needs_segment():
    assert check_steps(["measure", "segment", "register"]) == ("register", "segment", "measure")
    with pytest.raises(CSpineInputError, match="add the segment step"):
        check_steps(["measure"])
    with pytest.raises(CSpineInputError, match="unknown steps"):
        check_steps(["segment", "warp"])


def _classifier():
    from cspineai.nn.classifier import build_classifier

    return build_classifier({"series": ["T1_sag", "CT_bone"], "widths": [4, 8, 8, 16]})


def test_a_missing_series_needed_by_a_chosen_step_is_named_before_any_work(tmp_path):
    calls = []
    models = {"registration": "identity", "classifier": PipelineModel("classifier", _classifier(), "c",
                                                                      inputs=("CT_bone", "T1_sag"))}
    # The given "files" do not exist: the plan is checked before anything is read.
    inputs = {"T1_sag": tmp_path / "t1.nrrd", "T2_sag": tmp_path / "t2.nrrd"}
    with pytest.raises(CSpineInputError, match=r"CT_bone or CT_tissue series.*step 'register'.*leave 'register' out"):
        run_to_folder(inputs, tmp_path / "out", ["register", "predict"], models, "cpu",
                      progress=lambda *call: calls.append(call))
    with pytest.raises(CSpineInputError, match=r"CT_bone series.*step 'predict'.*reads CT_bone and T1_sag"):
        run_to_folder({"T1_sag": tmp_path / "t1.nrrd"}, tmp_path / "out", ["predict"], models, "cpu",
                      progress=lambda *call: calls.append(call))
    assert calls == [] and not (tmp_path / "out").exists()


def test_an_unknown_saliency_method_is_refused_before_any_work(case, tmp_path):
    calls = []
    with pytest.raises(ValueError, match="saliency_method must be one of"):
        run_to_folder(case.series, tmp_path / "out", ("predict", "saliency"), small_models(case), "cpu",
                      progress=lambda *call: calls.append(call), saliency_method="gradient")
    assert not calls and not (tmp_path / "out").exists()


def test_a_model_missing_from_the_registry_is_named_before_any_work(tmp_path, monkeypatch):
    from cspineai.models import registry

    monkeypatch.setattr(registry, "shipped_dir", lambda: tmp_path / "no-shipped-models")
    monkeypatch.setenv("CSPINEAI_USER_MODELS", str(tmp_path / "no-user-models"))
    calls = []
    with pytest.raises(CSpineModelError, match="classifier model 'no-such-model'.*registered: none"):
        run_to_folder({"T1_sag": tmp_path / "t1.nrrd", "CT_bone": tmp_path / "ct.nrrd"}, tmp_path / "out",
                      ["predict"], {"classifier": "no-such-model"}, "cpu", progress=lambda *call: calls.append(call))
    assert calls == [] and not (tmp_path / "out").exists()


def test_cancelling_from_the_progress_callback_stops_before_the_next_step_and_leaves_no_folder(case, tmp_path):
    cancel, steps_started = CancelToken(), []

    def progress(step, fraction, message):
        if fraction == 0.0 or not steps_started or steps_started[-1] != step:
            steps_started.append(step)
        if step == "register":
            cancel.cancel()

    models = {"registration": "identity", "classifier": _classifier()}
    with pytest.raises(CSpineCancelled):
        run_to_folder(case.series, tmp_path / "out", ["register", "predict"], models, "cpu", progress, cancel)
    assert steps_started == ["register"]
    assert list(tmp_path.iterdir()) == []  # no results folder and no partial one


def test_cancelling_while_the_folder_is_written_leaves_no_folder(case, tmp_path):
    result = run_case(case.series, ["register"], {"registration": "identity"}, "cpu")
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(CSpineCancelled):
        write_results(result, tmp_path / "out", bundle=False, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_results_folder_is_refused_before_any_work(case, tmp_path):
    (tmp_path / "out").mkdir()
    calls = []
    with pytest.raises(CSpineInputError, match="already exists"):
        run_to_folder(case.series, tmp_path / "out", ["register"], {"registration": "identity"}, "cpu",
                      progress=lambda *call: calls.append(call))
    assert calls == []


def test_inputs_may_be_files_and_only_the_needed_series_are_read(case, tmp_path):
    from cspineai.io import write_volume

    paths = {name: write_volume(case.series[name], tmp_path / f"{name}.nrrd") for name in ("CT_bone", "T1_sag")}
    result = run_case(CaseInputs(**paths, T2_tra=tmp_path / "not-read.nrrd"), ["register"],
                      {"registration": "identity"}, "cpu")
    assert sorted(result.series) == ["CT_bone", "T1_sag"]
    assert result.series["CT_bone"].modality == "CT_bone"
    # Identity registration: the warped CT is the CT resampled onto the MRI grid, the field is zero.
    assert np.abs(result.registration.displacement_ras).max() == 0.0


def test_device_auto_falls_back_to_the_cpu_with_a_note(case, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = run_case(case.series, ["register"], {"registration": "identity"}, "auto")
    assert result.device == "cpu" and any("CPU" in note for note in result.notes)
    with pytest.raises(CSpineInputError, match="no CUDA device"):
        run_case(case.series, ["register"], {"registration": "identity"}, "cuda")


def test_pipeline_steps_match_the_slicer_modules_steps():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CSpineAI"))
    try:
        from CSpineAILib import Logic
    finally:
        sys.path.pop(0)
    assert STEPS == Logic.STEPS


def test_default_model_is_the_shipped_model_of_the_roles_task_when_the_default_id_is_absent(tmp_path, monkeypatch):
    from cspineai.models import registry
    from cspineai.pipeline import DEFAULT_MODEL_IDS, default_model_id

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    entry = registry.ModelEntry(id="pain-other-release", task="pain", version="1.0.0", file="m.pt", sha256="0")
    registry.write_registry(shipped, [entry])
    monkeypatch.setattr(registry, "shipped_dir", lambda: shipped)
    monkeypatch.setenv("CSPINEAI_USER_MODELS", str(tmp_path / "no-user-models"))
    assert default_model_id("classifier") == "pain-other-release"
    # none shipped: the default id, whose absence is then reported
    assert default_model_id("segmentation") == DEFAULT_MODEL_IDS["segmentation"]


def test_series_are_checked_against_the_registry_entry_before_its_model_is_loaded(tmp_path, monkeypatch):
    from cspineai.models import registry

    entry = registry.ModelEntry(id="pain-x", task="pain", version="1", file="m.pt", sha256="0",
                                inputs=["T1_sag", "CT_bone"])
    monkeypatch.setattr(registry, "find_model", lambda model_id, *a, **k: entry)

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model must not be loaded before the series are checked")

    monkeypatch.setattr(registry, "load_model", must_not_load)
    with pytest.raises(CSpineInputError, match=r"CT_bone series.*step 'predict'.*classifier pain-x"):
        run_case({"T1_sag": tmp_path / "t1.nrrd"}, ["predict"], {"classifier": "pain-x"}, "cpu")
