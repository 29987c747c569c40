"""The CSpineAI panel: Inputs, Register, Predict, Cord, Models, Fine-tune.

Kept thin on purpose (the desktop Qt widget cannot run in CI): every decision lives in
:class:`~CSpineAILib.Logic.Logic`, :class:`~CSpineAILib.InstallLogic.InstallLogic` and
:class:`~CSpineAILib.ProcessRunner.ProcessRunner`, which are tested without Qt. This class binds the parameter node to
``Resources/UI/CSpineAI.ui``, turns clicks into logic calls wrapped in ``slicer.util.tryWithErrorDisplay`` (errors
reach the user as a message, not a console trace), and polls the runner from a QTimer so that callbacks, and so all
Qt calls, happen on the GUI thread while the job runs in its own process.
"""

from __future__ import annotations

from pathlib import Path

import qt
import slicer
import vtk

from .InstallLogic import InstallLogic, InstallLogicProtocol, formatMissing
from .Logic import MODEL_ROLES, Logic, LogicProtocol
from .Parameter import MODEL_FIELDS, SERIES_FIELDS, Parameter
from .ProcessRunner import ProcessRunner

MODULE_NAME = "CSpineAI"
POLL_INTERVAL_MS = 100


class Widget(qt.QWidget):
    """The module panel; ``logic`` and ``installLogic`` are injected so that tests can pass stand-ins."""

    def __init__(
        self,
        logic: LogicProtocol | None = None,
        installLogic: InstallLogicProtocol | None = None,
        parent=None,
    ) -> None:
        super().__init__(parent)
        self.logic = logic or Logic()
        self.installLogic = installLogic or InstallLogic(onProgress=self.onInstallProgress)
        self.runner = ProcessRunner(
            onProgress=self.onProgress,
            onLog=self.onLog,
            onFinished=self.onFinished,
            onError=self.onError,
            onCancelled=self.onCancelled,
        )
        self._job = ""  # "case" or "training": what the runner is running, to know what "finished" means
        self._jobOutput: Path | None = None

        layout = qt.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        uiWidget = slicer.util.loadUI(str(self.resourcePath() / "UI" / f"{MODULE_NAME}.ui"))
        uiWidget.setMRMLScene(slicer.mrmlScene)
        layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        self.pollTimer = qt.QTimer(self)
        self.pollTimer.setInterval(POLL_INTERVAL_MS)
        self.pollTimer.timeout.connect(self.onPollTimer)

        self._parameterNode = self._createParameterNode()
        self._parameterNode.connectGui(self.ui)  # every widget with a SlicerParameterName property
        self._parameterNode.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)

        self.ui.autoFillButton.clicked.connect(self.onAutoFill)
        self.ui.runButton.clicked.connect(self.onRun)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.installButton.clicked.connect(self.onInstall)
        self.ui.refreshModelsButton.clicked.connect(self.onRefreshModels)
        self.ui.addModelButton.clicked.connect(self.onAddModel)
        self.ui.startTrainingButton.clicked.connect(self.onStartTraining)
        for role in MODEL_ROLES:
            self._modelComboBox(role).currentIndexChanged.connect(lambda _index, role=role: self.onModelChosen(role))

        self.sceneCloseObserver = slicer.mrmlScene.AddObserver(slicer.mrmlScene.EndCloseEvent, self.onSceneClosed)
        self.onAutoFill()
        self._setRunning(False)
        self._updateDependencies()

    # ---- set-up ---------------------------------------------------------------------------------------------------

    @staticmethod
    def resourcePath() -> Path:
        return Path(__file__).resolve().parents[1] / "Resources"

    @staticmethod
    def _createParameterNode() -> Parameter:
        node = slicer.mrmlScene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(MODULE_NAME))
        node.SetAttribute("ModuleName", MODULE_NAME)
        return Parameter(node)

    def cleanup(self) -> None:
        """Called by the module widget when Slicer closes: stop a running job and its process tree."""
        self.runner.cancel()
        self.pollTimer.stop()
        slicer.mrmlScene.RemoveObserver(self.sceneCloseObserver)

    def _modelComboBox(self, role: str):
        return getattr(self.ui, f"{MODEL_FIELDS[role]}ComboBox")

    # ---- inputs ---------------------------------------------------------------------------------------------------

    def onAutoFill(self) -> None:
        """Fill empty series selectors from the volumes' names (series descriptions); never overrides a choice."""
        with slicer.util.tryWithErrorDisplay("Could not fill the inputs from the series descriptions."):
            for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
                if node.IsA("vtkMRMLLabelMapVolumeNode"):
                    continue
                series = self.logic.guessSeries(node.GetName())
                if series and getattr(self._parameterNode, SERIES_FIELDS[series]) is None:
                    setattr(self._parameterNode, SERIES_FIELDS[series], node)

    def onParameterChanged(self, *_) -> None:
        self._applySaliencyDisplay()

    def _applySaliencyDisplay(self) -> None:
        opacity = self._parameterNode.saliencyOpacity if self._parameterNode.showSaliency else 0.0
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            composite.SetForegroundOpacity(opacity)

    # ---- running the pipeline ---------------------------------------------------------------------------------------

    def onRun(self) -> None:
        with slicer.util.tryWithErrorDisplay("The case could not be started.", waitCursor=True):
            if not self._ensureDependencies():
                return
            parameter = self._parameterNode
            if parameter.outputDirectory == Path():
                raise ValueError("Choose an output folder for the results.")
            device, note = self.logic.resolveDevice(parameter.device)
            if note:
                self.onLog(note)
            self.ui.logTextEdit.clear()
            command = self.logic.startCase(
                parameter.inputNodes(),
                parameter.outputDirectory,
                parameter.steps(),
                device,
                parameter.models(),
                self.runner,
                saliencyMethod=parameter.saliencyMethod,
            )
            self._startPolling("case", parameter.outputDirectory, command)

    def onStartTraining(self) -> None:
        with slicer.util.tryWithErrorDisplay("Fine-tuning could not be started.", waitCursor=True):
            if not self._ensureDependencies():
                return
            parameter = self._parameterNode
            if parameter.trainingOutputDirectory == Path():
                raise ValueError("Choose an output folder for the fine-tuned model.")
            device, note = self.logic.resolveDevice(parameter.device)
            if note:
                self.onLog(note)
            self.ui.logTextEdit.clear()
            initFrom = (
                self.logic.startingModel(parameter.trainingConfig, parameter.models())
                if parameter.trainingFromSelectedModel
                else ""
            )
            command = self.logic.startTraining(
                parameter.trainingManifest,
                parameter.trainingConfig,
                parameter.trainingOutputDirectory,
                device,
                self.runner,
                initFrom,
            )
            self._startPolling("training", parameter.trainingOutputDirectory, command)

    def _startPolling(self, job: str, output: Path, command: list[str]) -> None:
        self._job, self._jobOutput = job, Path(output)
        self.onLog("$ " + " ".join(command))
        self.ui.progressBar.setValue(0)
        self._setRunning(True)
        self.pollTimer.start()

    def onPollTimer(self) -> None:
        if not self.runner.poll():
            self.pollTimer.stop()

    def onCancel(self) -> None:
        with slicer.util.tryWithErrorDisplay("The job could not be cancelled."):
            self.ui.statusLabel.setText("Cancelling...")
            self.runner.cancel()

    def onSceneClosed(self, *_) -> None:
        self.runner.cancel()

    def _setRunning(self, running: bool) -> None:
        self.ui.runButton.setEnabled(not running)
        self.ui.startTrainingButton.setEnabled(not running)
        self.ui.cancelButton.setEnabled(running)
        self.ui.installButton.setEnabled(not running)

    # ---- runner callbacks (GUI thread, from onPollTimer) ------------------------------------------------------------

    def onProgress(self, step: str, fraction: float, message: str) -> None:
        self.ui.progressBar.setValue(int(round(100 * fraction)))
        self.ui.statusLabel.setText(f"{step}: {message}" if message else step)

    def onLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def onFinished(self) -> None:
        self._setRunning(False)
        self.ui.progressBar.setValue(100)
        with slicer.util.tryWithErrorDisplay("The results could not be shown."):
            if self._job == "case":
                self._showCaseResults(self._jobOutput)
            else:
                self.ui.statusLabel.setText(f"Fine-tuning finished: the model is in {self._jobOutput}.")
                self.onRefreshModels()

    def onError(self, message: str) -> None:
        self._setRunning(False)
        self.logic.cleanUp()
        self.ui.statusLabel.setText("Failed.")
        slicer.util.errorDisplay(f"The {self._job or 'job'} failed:\n\n{message}", windowTitle=MODULE_NAME)

    def onCancelled(self) -> None:
        self._setRunning(False)
        self.logic.cleanUp()
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.setText("Cancelled: no results were written.")

    def _showCaseResults(self, outputDir: Path) -> None:
        nodes = self.logic.finishCase(outputDir)
        table = nodes.get("morphometry")
        if table is not None:
            self.ui.morphometryTableView.setMRMLTableNode(table)
        chart = nodes.get("plot")
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)
        prediction = self.logic.readPrediction(outputDir)
        if prediction is not None:
            self.ui.probabilityLabel.setText(f"{float(prediction['probability']):.2f}")
            self.ui.riskLabel.setText(self.logic.riskText(prediction))
        self.ui.registrationStatusLabel.setText("Registered" if nodes.get("transform") is not None else "Not run")
        self._applySaliencyDisplay()
        self.ui.statusLabel.setText(f"Done: results in {outputDir}.")

    # ---- models and dependencies -------------------------------------------------------------------------------------

    def onRefreshModels(self) -> None:
        with slicer.util.tryWithErrorDisplay("The model registry could not be read.", waitCursor=True):
            models = self.logic.listModels()
            self.ui.modelListWidget.clear()
            for model in models:
                self.ui.modelListWidget.addItem(f"{model['id']} {model['version']} [{model['source']}] {model['task']}")
            for role in MODEL_ROLES:
                comboBox = self._modelComboBox(role)
                wasBlocked = comboBox.blockSignals(True)
                comboBox.clear()
                comboBox.addItem("default", "")
                for model in models:
                    if model.get("role") == role:
                        comboBox.addItem(model["id"], model["id"])
                current = getattr(self._parameterNode, MODEL_FIELDS[role])
                comboBox.setCurrentIndex(max(comboBox.findData(current), 0))
                comboBox.blockSignals(wasBlocked)

    def onModelChosen(self, role: str) -> None:
        setattr(self._parameterNode, MODEL_FIELDS[role], self._modelComboBox(role).currentData or "")

    def onAddModel(self) -> None:
        with slicer.util.tryWithErrorDisplay("The model could not be added.", waitCursor=True):
            checkpoint = qt.QFileDialog.getOpenFileName(
                self, "Checkpoint of a fine-tuned CSpineAI model", "", "PyTorch checkpoint (*.pt)"
            )
            if not checkpoint:
                return
            modelId = qt.QInputDialog.getText(self, "Model id", "Id of the new model (e.g. pain-t1sag-ctbone-site):")
            if not modelId:
                return
            self.onLog(self.logic.addModel(Path(checkpoint), modelId))
            self.onRefreshModels()

    def onInstall(self) -> None:
        with slicer.util.tryWithErrorDisplay("The dependencies could not be installed."):
            self.installLogic.setupPythonRequirements(askConfirmation=True)
            self._updateDependencies()

    def onInstallProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.setValue(int(round(100 * fraction)))
        self.ui.statusLabel.setText(message)
        self.onLog(message)
        slicer.app.processEvents()  # pip runs in this thread: let the label repaint between packages

    def _ensureDependencies(self) -> bool:
        """Install on first use (after the user agrees); False when the user declined."""
        if not self.installLogic.missingRequirements():
            return True
        installed = self.installLogic.setupPythonRequirements(askConfirmation=True)
        self._updateDependencies()
        return installed

    def _updateDependencies(self) -> None:
        self.ui.dependenciesLabel.setText(formatMissing(self.installLogic.missingRequirements()))
