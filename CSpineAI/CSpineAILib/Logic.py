"""What the module does, without Qt: command lines for the child processes, input export, results into the scene.

The heavy work never runs in Slicer's own process: :meth:`Logic.startCase` writes the selected volumes to a private
folder and runs ``python -m cspineai run ...`` in a child (``PythonSlicer`` inside Slicer), whose progress lines the
:class:`~CSpineAILib.ProcessRunner.ProcessRunner` turns back into callbacks. The child imports ``cspineai`` from the
extension's own folder through ``PYTHONPATH``, so the module and the pipeline always come from the same checkout.
Finished results reach the scene through one narrow interface (:class:`SceneLoaderProtocol`), implemented by
``cspineai.scene``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from .ProcessRunner import ProcessRunner, summarizeFailure

#: Series the pipeline accepts, in the order the panel lists them (mirror of ``cspineai.series.SERIES``; not imported
#: so that the panel opens before the Python dependencies are installed).
SERIES = ("CT_bone", "CT_tissue", "T1_sag", "T2_sag", "T2_tra")
#: Pipeline steps in execution order (the ``--steps`` values of ``cspineai run``).
STEPS = ("register", "predict", "saliency", "segment", "measure")
#: Model roles of the registry, as ``cspineai run --model ROLE=ID`` names them.
MODEL_ROLES = ("registration", "classifier", "segmentation")
#: Role of each registry task (``Models.json`` ``task``; the inverse of ``cspineai.pipeline.ROLE_TASKS``).
TASK_ROLES = {"registration": "registration", "pain": "classifier", "cordseg": "segmentation"}
DEVICES = ("auto", "cpu", "cuda")
#: Saliency methods of ``cspineai run --saliency-method`` (mirror of ``cspineai.saliency.METHODS``), the default first
#: (``cspineai.saliency.DEFAULT_METHOD``; a test keeps both mirrors equal).
SALIENCY_METHODS = ("integrated_gradients", "gradcam", "occlusion")

# Series descriptions as scanners and PACS write them; the first pattern that matches wins, so CT before MRI and the
# more specific MRI names first. Node names in Slicer start with "<series number>: <series description>".
_SERIES_PATTERNS = (
    (
        "CT_bone",
        re.compile(r"\bct\b.*\b(bone|osteo|sharp|b6\d|b7\d|br6\d)|\b(bone|osteo)\b.*\bct\b|^ct[_ -]?bone", re.I),
    ),
    ("CT_tissue", re.compile(r"\bct\b.*\b(soft|tissue|std|standard|b3\d|br3\d)|^ct[_ -]?tissue", re.I)),
    ("T2_tra", re.compile(r"\bt2.*\b(tra|trans|ax|axial)\b|\b(tra|ax|axial)\b.*\bt2", re.I)),
    ("T2_sag", re.compile(r"\bt2.*\bsag|\bsag.*\bt2", re.I)),
    ("T1_sag", re.compile(r"\bt1.*\bsag|\bsag.*\bt1", re.I)),
)


def optionForSeries(series: str) -> str:
    """The ``cspineai run`` option of a series: ``CT_bone`` -> ``--ct-bone``."""
    return "--" + series.lower().replace("_", "-")


def findPackageRoot(moduleDir: Path | None = None) -> Path:
    """The folder that holds the ``cspineai`` package (what goes on the child's PYTHONPATH).

    Looked for, in order: ``$CSPINEAI_LOGIC_DIR``; ``CSpineAIPython/`` next to the module (the built extension, see
    ``CSpineAI/CMakeLists.txt``); ``Logic/`` beside the module folder (a source checkout added as an additional module
    path).
    """
    moduleDir = Path(moduleDir or Path(__file__).resolve().parents[1])
    candidates = [Path(os.environ["CSPINEAI_LOGIC_DIR"])] if os.environ.get("CSPINEAI_LOGIC_DIR") else []
    candidates += [moduleDir / "CSpineAIPython", moduleDir.parent / "Logic"]
    for candidate in candidates:
        if (candidate / "cspineai" / "__init__.py").is_file():
            return candidate.resolve()
    raise RuntimeError(
        "The CSpineAI Python package was not found (looked in: " + ", ".join(str(c) for c in candidates) + "). "
        "Add the whole CSpineAI folder as an additional module path, not only the CSpineAI/CSpineAI subfolder."
    )


def ensureImportable(packageRoot: Path) -> None:
    """Make ``import cspineai`` work in this process (the self-test and the scene layer run in Slicer's Python)."""
    if str(packageRoot) not in sys.path:
        sys.path.insert(0, str(packageRoot))


def defaultPythonExecutable() -> str:
    """``PythonSlicer`` inside Slicer (its Python without the GUI), else the interpreter running this code."""
    try:
        import slicer

        inSlicer = hasattr(slicer, "app")
    except ImportError:
        inSlicer = False
    if not inSlicer:
        return sys.executable
    executable = shutil.which("PythonSlicer")
    if executable is None:
        raise RuntimeError("PythonSlicer was not found next to Slicer: this Slicer installation is incomplete.")
    return executable


def defaultBaseEnvironment() -> dict[str, str]:
    """The environment a child starts from: Slicer's start-up environment inside Slicer (without the variables the
    application sets for itself, which would make ``PythonSlicer`` load the wrong libraries), else ``os.environ``."""
    try:
        import slicer.util

        if hasattr(slicer, "app"):
            return dict(slicer.util.startupEnvironment())
    except ImportError:
        pass
    return dict(os.environ)


class SceneLoaderProtocol(Protocol):
    """Turns a finished results folder into scene nodes (implemented by ``cspineai.scene``)."""

    def loadResults(self, resultsDir: Path) -> Mapping[str, object]:
        """Load the results folder into the scene; returns the created nodes by role (``ct``, ``transform``, ...)."""


class DefaultSceneLoader:
    """Calls ``cspineai.scene.load_results(results_dir, context=...)``; imported only when a case has finished.

    Without a context the scene layer uses Slicer's own scene (``slicer.mrmlScene``) inside the application.
    """

    def __init__(self, context=None) -> None:
        self.context = context

    def loadResults(self, resultsDir: Path) -> Mapping[str, object]:
        import cspineai.scene

        kwargs = {} if self.context is None else {"context": self.context}
        return cspineai.scene.load_results(Path(resultsDir), **kwargs)


class LogicProtocol(Protocol):
    """What the widget needs from the logic; tests pass stand-ins."""

    def startCase(
        self,
        inputs: Mapping[str, object],
        outputDir: Path,
        steps: Sequence[str],
        device: str,
        models: Mapping[str, str],
        runner: ProcessRunner,
        saliencyMethod: str = "",
    ) -> list[str]: ...

    def finishCase(self, outputDir: Path) -> Mapping[str, object]: ...

    def startTraining(
        self, manifest: Path, config: Path, outputDir: Path, device: str, runner: ProcessRunner, initFrom: str = ""
    ) -> list[str]: ...

    def startingModel(self, config: Path, models: Mapping[str, str]) -> str: ...

    def cleanUp(self) -> None: ...

    def guessSeries(self, name: str) -> str | None: ...

    def resolveDevice(self, requested: str) -> tuple[str, str]: ...

    def listModels(self) -> list[dict]: ...

    def addModel(self, checkpoint: Path, modelId: str) -> str: ...

    def readPrediction(self, outputDir: Path) -> dict | None: ...

    def riskText(self, prediction: dict) -> str: ...


class Logic:
    """Builds and starts the pipeline and training processes and loads their results.

    Args:
        packageRoot: folder holding the ``cspineai`` package (default: :func:`findPackageRoot`).
        pythonExecutable: interpreter for the children (default: :func:`defaultPythonExecutable`).
        baseEnvironment: factory of the children's environment (default: :func:`defaultBaseEnvironment`).
        sceneLoader: turns results folders into nodes (default: :class:`DefaultSceneLoader`).
        cudaAvailable: answers whether a CUDA device can be used (default: asks torch, when installed).
    """

    def __init__(
        self,
        packageRoot: Path | None = None,
        pythonExecutable: str | None = None,
        baseEnvironment: Callable[[], dict[str, str]] | None = None,
        sceneLoader: SceneLoaderProtocol | None = None,
        cudaAvailable: Callable[[], bool] | None = None,
    ) -> None:
        self._packageRoot = packageRoot
        self._pythonExecutable = pythonExecutable
        self._baseEnvironment = baseEnvironment or defaultBaseEnvironment
        self.sceneLoader = sceneLoader or DefaultSceneLoader()
        self._cudaAvailable = cudaAvailable or _torchCudaAvailable
        self._inputDir: Path | None = None

    @property
    def packageRoot(self) -> Path:
        if self._packageRoot is None:
            self._packageRoot = findPackageRoot()
        return self._packageRoot

    @property
    def pythonExecutable(self) -> str:
        if self._pythonExecutable is None:
            self._pythonExecutable = defaultPythonExecutable()
        return self._pythonExecutable

    # ---- command lines --------------------------------------------------------------------------------------------

    def childEnvironment(self) -> dict[str, str]:
        """The base environment with the package root first on ``PYTHONPATH`` and unbuffered output."""
        env = dict(self._baseEnvironment())
        paths = [str(self.packageRoot)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))  # no duplicates, order kept
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def buildRunCommand(
        self,
        inputs: Mapping[str, str | os.PathLike],
        outputDir: str | os.PathLike,
        steps: Sequence[str],
        device: str = "auto",
        models: Mapping[str, str] | None = None,
        saliencyMethod: str = "",
    ) -> list[str]:
        """``python -m cspineai run --ct-bone F ... --steps register,predict --device cpu --out DIR``.

        ``saliencyMethod`` (one of :data:`SALIENCY_METHODS`) is passed only with the saliency step; empty: the
        pipeline's default. Raises ValueError for an unknown series, step, device, saliency method or model role, or
        when no step is chosen: these are programming errors of the caller, the pipeline itself checks that the
        chosen steps have their series.
        """
        unknown = sorted(set(inputs) - set(SERIES))
        if unknown:
            raise ValueError(f"unknown series {unknown}; expected some of {list(SERIES)}")
        if not steps:
            raise ValueError("choose at least one step to run")
        badSteps = [step for step in steps if step not in STEPS]
        if badSteps:
            raise ValueError(f"unknown steps {badSteps}; expected some of {list(STEPS)}")
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; expected one of {list(DEVICES)}")
        if saliencyMethod and saliencyMethod not in SALIENCY_METHODS:
            raise ValueError(f"unknown saliency method {saliencyMethod!r}; expected one of {list(SALIENCY_METHODS)}")
        command = [self.pythonExecutable, "-m", "cspineai", "run"]
        for series in SERIES:  # a fixed order keeps the command line reproducible in the log
            if series in inputs:
                command += [optionForSeries(series), str(Path(inputs[series]))]
        command += ["--steps", ",".join(step for step in STEPS if step in steps)]
        command += ["--device", device]
        if saliencyMethod and "saliency" in steps:
            command += ["--saliency-method", saliencyMethod]
        for role, modelId in sorted((models or {}).items()):
            if role not in MODEL_ROLES:
                raise ValueError(f"unknown model role {role!r}; expected one of {list(MODEL_ROLES)}")
            if modelId:
                command += ["--model", f"{role}={modelId}"]
        command += ["--out", str(Path(outputDir))]
        return command

    def trainingScript(self) -> Path:
        """``Training/train.py`` of the checkout the package comes from."""
        script = self.packageRoot.parent / "Training" / "train.py"
        if not script.is_file():
            raise RuntimeError(f"The training script was not found at {script}; fine-tuning needs a source checkout.")
        return script

    def buildTrainingCommand(
        self,
        manifest: str | os.PathLike,
        config: str | os.PathLike,
        outputDir: str | os.PathLike,
        device: str = "auto",
        initFrom: str = "",
    ) -> list[str]:
        """``python Training/train.py --config CFG --set manifest=CSV --set output_dir=DIR --set device=D
        [--set init_from=ID]``.

        The manifest, output folder and device override the configuration's keys of the same name, so that one
        configuration serves every site; ``initFrom`` (a registry id, ``id@version``) makes the run fine-tune that
        model instead of training from random weights. Checks that the manifest and configuration files exist.
        """
        for label, path in (("manifest", manifest), ("training configuration", config)):
            if Path(path) == Path() or not Path(path).is_file():
                raise ValueError(f"Choose an existing {label} file (got {str(path) or 'nothing'}).")
        if Path(outputDir) == Path():
            raise ValueError("Choose an output folder for the fine-tuned model.")
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; expected one of {list(DEVICES)}")
        if initFrom and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._-]+)?", initFrom):
            raise ValueError(f"A model to start from is a registry id, optionally id@version (got {initFrom!r}).")
        return [
            self.pythonExecutable,
            str(self.trainingScript()),
            "--config",
            str(Path(config).resolve()),
            "--set",
            f"manifest={Path(manifest).resolve()}",
            "--set",
            f"output_dir={Path(outputDir).resolve()}",
            "--set",
            f"device={device}",
        ] + (["--set", f"init_from={initFrom}"] if initFrom else [])

    # ---- running --------------------------------------------------------------------------------------------------

    def startCase(
        self,
        inputs: Mapping[str, object],
        outputDir: Path,
        steps: Sequence[str],
        device: str,
        models: Mapping[str, str],
        runner: ProcessRunner,
        saliencyMethod: str = "",
    ) -> list[str]:
        """Export the input nodes and start the pipeline in ``runner``; returns the command (for the log).

        ``inputs`` maps series to volume nodes or to file paths. The results folder is the pipeline's to write
        (atomically); the exported inputs live in a private temporary folder removed by :meth:`cleanUp`.
        """
        if Path(outputDir) == Path():
            raise ValueError("Choose an output folder for the results.")
        self.cleanUp()
        self._inputDir = Path(tempfile.mkdtemp(prefix="cspineai-inputs-"))
        paths = {}
        for series, value in inputs.items():
            if value is None:
                continue
            paths[series] = (
                Path(value)
                if isinstance(value, str | os.PathLike)
                else self.exportVolumeNode(value, self._inputDir / f"{series}.nrrd", series)
            )
        command = self.buildRunCommand(paths, outputDir, steps, device, models, saliencyMethod)
        runner.start(command, env=self.childEnvironment())
        return command

    def finishCase(self, outputDir: Path) -> Mapping[str, object]:
        """After a successful run: remove the exported inputs and load the results into the scene."""
        self.cleanUp()
        return self.sceneLoader.loadResults(Path(outputDir))

    def startTraining(
        self, manifest: Path, config: Path, outputDir: Path, device: str, runner: ProcessRunner, initFrom: str = ""
    ) -> list[str]:
        """Start ``Training/train.py`` in ``runner`` (from the checkout root, where relative config paths resolve);
        ``initFrom``: the registry model to fine-tune (see :meth:`startingModel`), or "" for random weights."""
        command = self.buildTrainingCommand(manifest, config, outputDir, device, initFrom)
        runner.start(command, env=self.childEnvironment(), cwd=self.packageRoot.parent)
        return command

    def cleanUp(self) -> None:
        """Remove the exported inputs of the last run (they are copies of patient images)."""
        if self._inputDir is not None:
            shutil.rmtree(self._inputDir, ignore_errors=True)
            self._inputDir = None

    @staticmethod
    def exportVolumeNode(node, path: Path, series: str) -> Path:
        """Write a scalar volume node to ``path`` (NRRD) for the child; named by series, never by the node's name,
        which may hold the patient's name."""
        import slicer

        if node.GetImageData() is None:
            raise ValueError(f"{series}: the selected volume has no image data.")
        if node.GetParentTransformNode() is not None:
            # The file would hold the untransformed geometry and the pipeline would silently see another position.
            raise ValueError(
                f"{series}: the selected volume is under a transform; harden or remove the transform first."
            )
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(False)  # written and read once, on the same machine: speed over size
        if not storage.WriteData(node):
            raise ValueError(f"{series}: the volume could not be written to {path}.")
        return Path(path)

    @staticmethod
    def readPrediction(outputDir: Path) -> dict | None:
        """The ``prediction`` block of ``report.json`` (``probability``, ``threshold``...), or None without one."""
        report = Path(outputDir) / "report.json"
        if not report.is_file():
            return None
        try:
            prediction = json.loads(report.read_text(encoding="utf-8")).get("prediction")
        except (OSError, ValueError, AttributeError) as error:
            raise ValueError(f"{report}: not a readable CSpineAI report ({error}).") from error
        return prediction if isinstance(prediction, dict) and "probability" in prediction else None

    @staticmethod
    def riskText(prediction: dict) -> str:
        """``"Postoperative neck pain likely (p = 0.72, threshold 0.50)"``: what the panel's Risk line says."""
        probability = float(prediction["probability"])
        threshold = float(prediction.get("threshold", 0.5))
        verdict = "likely" if probability >= threshold else "unlikely"
        return f"Postoperative neck pain {verdict} (p = {probability:.2f}, threshold {threshold:.2f})"

    # ---- panel helpers --------------------------------------------------------------------------------------------

    @staticmethod
    def guessSeries(name: str) -> str | None:
        """The series a volume most likely is, from its node name or series description, or None."""
        text = re.sub(r"[_\-]+", " ", name)
        for series, pattern in _SERIES_PATTERNS:
            if pattern.search(text) or pattern.search(name):
                return series
        return None

    def resolveDevice(self, requested: str) -> tuple[str, str]:
        """``(device, note)``: ``auto`` and ``cuda`` fall back to ``cpu`` (with a note saying so) without CUDA."""
        if requested not in DEVICES:
            raise ValueError(f"unknown device {requested!r}; expected one of {list(DEVICES)}")
        if requested == "cpu":
            return "cpu", ""
        if self._cudaAvailable():
            return "cuda", ""
        if requested == "cuda":
            return "cpu", "No CUDA GPU is available to Slicer's Python: running on the CPU instead."
        return "cpu", ""

    def _runCli(self, *args: str, timeout: float = 600.0) -> str:
        command = [self.pythonExecutable, "-m", "cspineai", *args]
        done = subprocess.run(
            command, env=self.childEnvironment(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(summarizeFailure((done.stdout + done.stderr).splitlines(), done.returncode))
        return done.stdout

    def listModels(self) -> list[dict]:
        """The model registry, shipped and user models: dicts with ``id``, ``version``, ``task``, ``role``, ``source``.

        Read in this process (the registry is JSON; no torch needed); ``role`` is the panel's model role or "".
        """
        ensureImportable(self.packageRoot)
        from cspineai.models.registry import list_models

        models = []
        for entry in list_models():
            models.append(
                {
                    "id": entry.id,
                    "version": entry.version,
                    "task": entry.task,
                    "role": TASK_ROLES.get(entry.task, ""),
                    "source": entry.source,
                    "inputs": list(entry.inputs),
                }
            )
        return models

    def startingModel(self, config: Path, models: Mapping[str, str]) -> str:
        """The registry model that fine-tuning with ``config`` starts from: the Models section's choice (``models``,
        by role) for the configuration's task, else that role's default model; "" for a task no role runs (toy) or
        when ``config`` is not a file yet (the command builder then says so)."""
        if Path(config) == Path() or not Path(config).is_file():
            return ""
        ensureImportable(self.packageRoot)
        from cspineai.training.config import read_yaml

        role = TASK_ROLES.get(str(read_yaml(config).get("task", "")))
        if role is None:
            return ""
        if models.get(role):
            return models[role]
        from cspineai.pipeline import default_model_id

        return default_model_id(role)

    def buildAddModelCommand(self, checkpoint: str | os.PathLike, modelId: str) -> list[str]:
        """``python -m cspineai export --checkpoint CKPT --id ID``: registers a fine-tuned checkpoint in the user
        registry with its model card and SHA-256."""
        if not Path(checkpoint).is_file():
            raise ValueError(f"Choose the checkpoint file of the fine-tuned model (got {checkpoint}).")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", modelId or ""):
            raise ValueError(f"A model id is letters, digits, '.', '_' and '-' (got {modelId!r}).")
        return [
            self.pythonExecutable,
            "-m",
            "cspineai",
            "export",
            "--checkpoint",
            str(Path(checkpoint)),
            "--id",
            modelId,
        ]

    def addModel(self, checkpoint: Path, modelId: str) -> str:
        """Register a fine-tuned model (runs :meth:`buildAddModelCommand` and waits); returns what it printed."""
        command = self.buildAddModelCommand(checkpoint, modelId)
        return self._runCli(*command[3:]).strip()


def _torchCudaAvailable() -> bool:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())
