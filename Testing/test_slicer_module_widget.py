"""The panel's glue, with Slicer's Qt layer replaced by recorders (desktop Qt cannot run here).

What is checked is the widget's own wiring: the parameter node drives the logic calls, the runner's callbacks reach
the right labels through the QTimer poll, errors go through ``tryWithErrorDisplay``/``errorDisplay``, and every
``self.ui.<name>`` the widget touches exists in the real ``CSpineAI.ui``. The logic itself is tested without stubs in
test_slicer_module_logic.py.
"""

# The stand-ins implement Slicer's camelCase API, hence the names.
# ruff: noqa: N802, N803, N806

from __future__ import annotations

import contextlib
import importlib
import sys
import textwrap
import types
import typing
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]

from CSpineAILib.ProcessRunner import ProcessRunner  # noqa: E402

UI_FILE = REPO / "CSpineAI" / "Resources" / "UI" / "CSpineAI.ui"


class FakeVolumeNode:
    def __init__(self, name: str, labelmap: bool = False):
        self.name, self.labelmap = name, labelmap

    def GetName(self):
        return self.name

    def IsA(self, className):
        return className == "vtkMRMLLabelMapVolumeNode" and self.labelmap


def _parameterNodeWrapper(cls):
    """Typed fields with their defaults, like Slicer's wrapper, without the MRML serialisation."""
    defaults = {name: getattr(cls, name, None) for name in typing.get_type_hints(cls, include_extras=True)}

    def initialise(self, parameterNode):
        self.parameterNode = parameterNode
        for name, value in defaults.items():
            setattr(self, name, value)

    cls.__init__ = initialise
    cls.connectGui = lambda self, gui: setattr(self, "connectedGui", gui)
    return cls


class FakeSlicer:
    """The parts of ``slicer``, ``slicer.util``, ``slicer.parameterNodeWrapper`` and ``qt`` the widget uses."""

    def __init__(self):
        self.nodes: list = []
        self.errors: list[str] = []
        self.shownErrors: list[str] = []
        self.loadedUi: list[str] = []
        uiNames = [w.get("name") for w in ET.parse(UI_FILE).iter("widget")]
        self.ui = types.SimpleNamespace(**{name: mock.MagicMock(name=name) for name in uiNames})

        util = types.ModuleType("slicer.util")
        util.loadUI = lambda path: self.loadedUi.append(path) or mock.MagicMock()
        util.childWidgetVariables = lambda widget: self.ui
        util.getNodesByClass = lambda className: list(self.nodes) if className == "vtkMRMLScalarVolumeNode" else []
        util.errorDisplay = lambda text, **kwargs: self.shownErrors.append(text)
        util.tryWithErrorDisplay = self._tryWithErrorDisplay

        wrapper = types.ModuleType("slicer.parameterNodeWrapper")
        wrapper.parameterNodeWrapper = _parameterNodeWrapper
        wrapper.Choice = lambda choices: ("Choice", tuple(choices))
        wrapper.WithinRange = lambda low, high: ("WithinRange", low, high)

        self.slicer = types.ModuleType("slicer")
        self.slicer.util, self.slicer.parameterNodeWrapper = util, wrapper
        self.slicer.vtkMRMLScalarVolumeNode = type("vtkMRMLScalarVolumeNode", (), {})
        self.slicer.mrmlScene = mock.MagicMock(name="mrmlScene")
        self.slicer.mrmlScene.GetSingletonNode.return_value = None
        self.slicer.app = mock.MagicMock(name="app")
        self.slicer.modules = mock.MagicMock(name="modules")

        self.qt = types.ModuleType("qt")
        self.qt.QWidget = type("QWidget", (), {"__init__": lambda self, parent=None: None})
        self.qt.QVBoxLayout = mock.MagicMock(name="QVBoxLayout")
        self.qt.QTimer = mock.MagicMock(name="QTimer")
        self.qt.QFileDialog = mock.MagicMock(name="QFileDialog")
        self.qt.QInputDialog = mock.MagicMock(name="QInputDialog")

    @contextlib.contextmanager
    def _tryWithErrorDisplay(self, message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as error:  # Slicer shows the message box, then re-raises
            self.errors.append(f"{message}\n\n{error}")
            raise


class FakeLogic:
    def __init__(self, runnerCommand=None):
        self.calls: list = []
        self.runnerCommand = runnerCommand
        self.prediction = {"probability": 0.8, "threshold": 0.5}

    def guessSeries(self, name):
        from CSpineAILib.Logic import Logic

        return Logic.guessSeries(name)

    def resolveDevice(self, requested):
        return ("cpu", "No CUDA GPU: CPU instead.") if requested == "cuda" else ("cpu", "")

    def startCase(self, inputs, outputDir, steps, device, models, runner, saliencyMethod=""):
        self.calls.append(("startCase", inputs, outputDir, steps, device, models, saliencyMethod))
        if self.runnerCommand:
            runner.start(self.runnerCommand)
        return ["python", "-m", "cspineai", "run"]

    def startTraining(self, manifest, config, outputDir, device, runner, initFrom=""):
        self.calls.append(("startTraining", manifest, config, outputDir, device, initFrom))
        return ["python", "Training/train.py"]

    def startingModel(self, config, models):
        return models.get("segmentation") or "cordseg-unet"

    def finishCase(self, outputDir):
        self.calls.append(("finishCase", outputDir))
        return {"morphometry": "table node", "transform": "transform node"}

    def cleanUp(self):
        self.calls.append(("cleanUp",))

    def readPrediction(self, outputDir):
        return self.prediction

    def riskText(self, prediction):
        return f"risk {prediction['probability']}"

    def listModels(self):
        return [{"id": "pain-site", "version": "1.0.0", "task": "pain", "role": "classifier", "source": "user"}]

    def addModel(self, checkpoint, modelId):
        return f"registered {modelId}"


class FakeInstaller:
    def __init__(self, missing=(), accept=True):
        self.missing, self.accept, self.asked = list(missing), accept, 0

    def missingRequirements(self):
        return list(self.missing)

    def setupPythonRequirements(self, askConfirmation=True):
        self.asked += 1
        if self.accept:
            self.missing = []
        return self.accept


@pytest.fixture
def fake(monkeypatch):
    fake = FakeSlicer()
    for name, module in (("slicer", fake.slicer), ("slicer.util", fake.slicer.util), ("qt", fake.qt)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", fake.slicer.parameterNodeWrapper)
    for name in ("CSpineAILib.Widget", "CSpineAILib.Parameter"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    fake.module = importlib.import_module("CSpineAILib.Widget")
    yield fake
    package = sys.modules["CSpineAILib"]
    for name in ("Widget", "Parameter"):  # imported against the stand-ins: never reuse them
        sys.modules.pop(f"CSpineAILib.{name}", None)
        if name in vars(package):
            delattr(package, name)


def _widget(fake, logic=None, installer=None):
    return fake.module.Widget(logic=logic or FakeLogic(), installLogic=installer or FakeInstaller())


def test_panel_loads_the_modules_ui_binds_the_parameter_node_and_fills_inputs_from_series_names(fake):
    fake.nodes = [FakeVolumeNode("5: T1_TSE_SAG"), FakeVolumeNode("CT_bone"), FakeVolumeNode("t1 sag", labelmap=True)]
    widget = _widget(fake)
    assert fake.loadedUi == [str(UI_FILE)]
    assert widget._parameterNode.connectedGui is fake.ui
    assert widget._parameterNode.t1Sag is fake.nodes[0] and widget._parameterNode.ctBone is fake.nodes[1]
    fake.nodes.append(FakeVolumeNode("3: T1 SAG second"))
    widget.onAutoFill()
    assert widget._parameterNode.t1Sag is fake.nodes[0], "a selection already made must be kept"


def test_run_passes_the_parameter_node_to_the_logic_and_locks_the_panel(fake):
    fake.nodes = [FakeVolumeNode("CT_bone"), FakeVolumeNode("T2 SAG")]
    logic = FakeLogic()
    widget = _widget(fake, logic)
    parameter = widget._parameterNode
    parameter.outputDirectory = Path("/results/case")
    parameter.stepSaliency = False
    parameter.device = "cuda"
    parameter.classifierModel = "pain-site"
    widget.onRun()
    assert logic.calls == [
        (
            "startCase",
            {"CT_bone": fake.nodes[0], "T2_sag": fake.nodes[1]},
            Path("/results/case"),
            ["register", "predict", "segment", "measure"],
            "cpu",
            {"classifier": "pain-site"},
            "integrated_gradients",
        )
    ]
    widget.pollTimer.start.assert_called_once()
    fake.ui.runButton.setEnabled.assert_called_with(False)
    fake.ui.cancelButton.setEnabled.assert_called_with(True)
    fake.ui.logTextEdit.appendPlainText.assert_any_call("No CUDA GPU: CPU instead.")


def test_run_without_an_output_folder_shows_a_readable_error_and_starts_nothing(fake):
    logic = FakeLogic()
    widget = _widget(fake, logic)
    with pytest.raises(ValueError):
        widget.onRun()
    assert fake.errors == ["The case could not be started.\n\nChoose an output folder for the results."]
    assert logic.calls == []


def test_run_installs_missing_dependencies_first_and_stops_when_the_user_declines(fake):
    logic, installer = FakeLogic(), FakeInstaller(missing=["monai<1.7,>=1.6"], accept=False)
    widget = _widget(fake, logic, installer)
    widget._parameterNode.outputDirectory = Path("/results/case")
    widget.onRun()
    assert installer.asked == 1 and logic.calls == []


def test_runner_callbacks_update_progress_results_and_errors(fake):
    logic = FakeLogic()
    widget = _widget(fake, logic)
    widget._job, widget._jobOutput = "case", Path("/results/case")
    widget.onProgress("segment", 0.4, "running the network")
    fake.ui.progressBar.setValue.assert_called_with(40)
    fake.ui.statusLabel.setText.assert_called_with("segment: running the network")

    widget.onFinished()
    assert ("finishCase", Path("/results/case")) in logic.calls
    fake.ui.morphometryTableView.setMRMLTableNode.assert_called_with("table node")
    fake.ui.probabilityLabel.setText.assert_called_with("0.80")
    fake.ui.riskLabel.setText.assert_called_with("risk 0.8")
    fake.ui.registrationStatusLabel.setText.assert_called_with("Registered")

    widget.onError("T1_sag: the file is missing (exit status 2)")
    assert fake.shownErrors == ["The case failed:\n\nT1_sag: the file is missing (exit status 2)"]
    assert ("cleanUp",) in logic.calls

    widget.onCancelled()
    fake.ui.statusLabel.setText.assert_called_with("Cancelled: no results were written.")


def test_the_timer_poll_delivers_a_real_childs_progress_and_completion(fake):
    code = textwrap.dedent("""
        print("[cspineai-progress] 0.500 register halfway", flush=True)
        print("[cspineai-progress] 1.000 measure done", flush=True)
    """)
    logic = FakeLogic(runnerCommand=[sys.executable, "-c", code])
    widget = _widget(fake, logic)
    widget._parameterNode.outputDirectory = Path("/results/case")
    widget.onRun()
    assert widget.runner.wait(timeout=30)  # what the QTimer's onPollTimer calls do, tick by tick
    widget.onPollTimer()
    widget.pollTimer.stop.assert_called()
    fake.ui.progressBar.setValue.assert_any_call(50)
    assert ("finishCase", Path("/results/case")) in logic.calls
    fake.ui.runButton.setEnabled.assert_called_with(True)


def test_saliency_display_follows_the_toggle_and_opacity(fake):
    composite = mock.MagicMock()
    fake.slicer.util.getNodesByClass = lambda className: [composite] if className == "vtkMRMLSliceCompositeNode" else []
    widget = _widget(fake)
    widget._parameterNode.saliencyOpacity = 0.3
    widget.onParameterChanged()
    composite.SetForegroundOpacity.assert_called_with(0.3)
    widget._parameterNode.showSaliency = False
    widget.onParameterChanged()
    composite.SetForegroundOpacity.assert_called_with(0.0)


def test_model_list_fills_the_per_role_choices(fake):
    widget = _widget(fake)
    for role in ("registration", "classifier", "segmentation"):
        getattr(fake.ui, f"{role}ModelComboBox").findData.return_value = -1  # Qt's "not found"
    widget.onRefreshModels()
    fake.ui.modelListWidget.addItem.assert_called_with("pain-site 1.0.0 [user] pain")
    fake.ui.classifierModelComboBox.addItem.assert_any_call("pain-site", "pain-site")
    fake.ui.classifierModelComboBox.setCurrentIndex.assert_called_with(0)  # the parameter's "" is the default entry
    assert all(call.args[0] != "pain-site" for call in fake.ui.segmentationModelComboBox.addItem.call_args_list)
    fake.ui.classifierModelComboBox.currentData = "pain-site"
    widget.onModelChosen("classifier")
    assert widget._parameterNode.classifierModel == "pain-site"


def test_fine_tuning_starts_from_the_selected_model_unless_unticked(fake):
    logic = FakeLogic()
    widget = _widget(fake, logic)
    parameter = widget._parameterNode
    assert parameter.trainingFromSelectedModel is True
    parameter.trainingManifest, parameter.trainingConfig = Path("/site/manifest.csv"), Path("/cfg/cordseg.yaml")
    parameter.trainingOutputDirectory, parameter.segmentationModel = Path("/runs/site"), "cordseg-site"
    widget.onStartTraining()
    parameter.trainingFromSelectedModel = False
    widget.onStartTraining()
    starts = [call for call in logic.calls if call[0] == "startTraining"]
    assert [call[-1] for call in starts] == ["cordseg-site", ""]
    assert starts[0][1:5] == (Path("/site/manifest.csv"), Path("/cfg/cordseg.yaml"), Path("/runs/site"), "cpu")


def test_cancel_stops_the_runner(fake):
    widget = _widget(fake)
    widget.runner = mock.MagicMock(spec=ProcessRunner)
    widget.onCancel()
    widget.runner.cancel.assert_called_once()
