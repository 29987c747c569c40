"""Install the Python packages the pipeline needs into Slicer's Python, on first use and only after asking.

Nothing here runs at import time: opening the module must stay instant and must never change Slicer's Python behind
the user's back. torch comes from the PyTorch extension (``PyTorchUtils``), which picks the CPU or CUDA build that fits
the machine; every other package comes from ``Resources/requirements-slicer.txt`` through ``slicer.util.pip_install``.
Every dependency on Slicer (import check, pip, confirmation dialog, PyTorch extension) is injected, so the decisions
(what is missing, which pip command) are tested without the application.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

#: torch versions the pipeline runs with (``weights_only`` loading and the MONAI 1.6 API need at least 2.4).
TORCH_REQUIREMENT = "torch>=2.4"
#: Import names that differ from the distribution name.
IMPORT_NAMES = {"pyyaml": "yaml", "scikit-learn": "sklearn", "pillow": "PIL"}
NO_DEPS_MARKER = "no-deps"


@dataclass(frozen=True)
class PackageRequirement:
    """One line of the requirements file: a PEP 508 requirement and whether pip must skip its dependencies."""

    requirement: Requirement
    noDeps: bool = False

    @property
    def name(self) -> str:
        return self.requirement.name

    @property
    def importName(self) -> str:
        return IMPORT_NAMES.get(self.name.lower(), self.name.replace("-", "_"))

    def pipArguments(self) -> list[str]:
        """Arguments for ``slicer.util.pip_install`` (a list, so no shell quoting of ``<`` and ``>``)."""
        return [str(self.requirement)] + (["--no-deps"] if self.noDeps else [])


def defaultRequirementsFile() -> Path:
    return Path(__file__).resolve().parents[1] / "Resources" / "requirements-slicer.txt"


def readRequirements(path: Path) -> list[PackageRequirement]:
    """Parse the requirements file: one requirement per line, ``#`` comments, ``# no-deps`` after a requirement."""
    requirements = []
    for number, rawLine in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        text, _, comment = rawLine.partition("#")
        if not text.strip():
            continue
        try:
            requirement = Requirement(text.strip())
        except Exception as error:  # packaging's InvalidRequirement; the message names the line
            raise ValueError(f"{path}, line {number}: not a valid requirement ({error})") from error
        requirements.append(PackageRequirement(requirement, noDeps=comment.strip().startswith(NO_DEPS_MARKER)))
    return requirements


def _findModule(name: str) -> object:
    # find_spec, not import: importing monai would import torch into Slicer's process just to answer "is it there".
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ImportError(f"No module named {name!r}")
    return spec


def _installedVersion(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _askInSlicer(title: str, message: str) -> bool:
    import slicer

    return bool(slicer.util.confirmOkCancelDisplay(message, windowTitle=title))


def _pipInSlicer(arguments: list[str]) -> None:
    import slicer

    slicer.util.pip_install(arguments)


def _torchLogic():
    try:
        import PyTorchUtils
    except ImportError as error:
        raise RuntimeError(
            "CSpineAI needs the PyTorch extension: install it from the Extensions Manager, restart Slicer and try "
            "again."
        ) from error
    return PyTorchUtils.PyTorchUtilsLogic()


class InstallLogicProtocol(Protocol):
    def missingRequirements(self) -> list[str]: ...

    def setupPythonRequirements(self, askConfirmation: bool = True) -> bool: ...


class InstallLogic:
    """Finds the missing packages and installs them with confirmation and progress.

    Args:
        requirementsFile: the pinned requirements (default: ``Resources/requirements-slicer.txt``).
        importer: finds a module by import name, raising ImportError when it is absent (default: ``find_spec``).
        versionOf: installed version of a distribution or None (default: ``importlib.metadata``).
        pipInstall: installs one requirement from a list of pip arguments (default ``slicer.util.pip_install``).
        askConfirmation: ``(title, message) -> bool`` (default: Slicer's OK/Cancel dialog).
        torchLogic: factory of the PyTorch extension's ``PyTorchUtilsLogic``.
        onProgress: ``(fraction, message)`` for the panel's progress bar and log.
    """

    def __init__(
        self,
        requirementsFile: Path | None = None,
        importer: Callable[[str], object] = _findModule,
        versionOf: Callable[[str], str | None] = _installedVersion,
        pipInstall: Callable[[list[str]], None] = _pipInSlicer,
        askConfirmation: Callable[[str, str], bool] = _askInSlicer,
        torchLogic: Callable[[], object] = _torchLogic,
        onProgress: Callable[[float, str], None] | None = None,
    ) -> None:
        self.requirementsFile = Path(requirementsFile or defaultRequirementsFile())
        self._import = importer
        self._versionOf = versionOf
        self._pipInstall = pipInstall
        self._ask = askConfirmation
        self._torchLogic = torchLogic
        self.onProgress = onProgress or (lambda fraction, message: None)

    def requirements(self) -> list[PackageRequirement]:
        return readRequirements(self.requirementsFile)

    def isSatisfied(self, requirement: PackageRequirement | Requirement) -> bool:
        """Importable and, when the version is known, inside the requirement's range."""
        if isinstance(requirement, Requirement):
            requirement = PackageRequirement(requirement)
        try:
            self._import(requirement.importName)
        except ImportError:
            return False
        installed = self._versionOf(requirement.name)
        if installed is None or not requirement.requirement.specifier:
            return True
        try:
            return requirement.requirement.specifier.contains(Version(installed), prereleases=True)
        except InvalidVersion:
            return True  # a local build with an odd version string: trust that it imports

    def torchMissing(self) -> bool:
        return not self.isSatisfied(Requirement(TORCH_REQUIREMENT))

    def missingPackages(self) -> list[PackageRequirement]:
        """Requirements of the file that are absent or outside their range (torch is not among them)."""
        return [requirement for requirement in self.requirements() if not self.isSatisfied(requirement)]

    def missingRequirements(self) -> list[str]:
        """Everything to install, as the user reads it (``torch>=2.4 (PyTorch extension)``, ``monai<1.7,>=1.6``)."""
        missing = [f"{TORCH_REQUIREMENT} (PyTorch extension)"] if self.torchMissing() else []
        return missing + [str(requirement.requirement) for requirement in self.missingPackages()]

    def pipCommands(self) -> list[list[str]]:
        """The ``pip_install`` argument lists that :meth:`setupPythonRequirements` would run, in order."""
        return [requirement.pipArguments() for requirement in self.missingPackages()]

    def setupPythonRequirements(self, askConfirmation: bool = True) -> bool:
        """Install what is missing; returns False when the user declined, True when everything is in place.

        Raises RuntimeError with a readable message when an installation step fails.
        """
        missing = self.missingRequirements()
        if not missing:
            return True
        message = (
            "CSpineAI needs these Python packages in Slicer's Python:\n\n  " + "\n  ".join(missing) + "\n\n"
            "They are downloaded and installed now; this can take several minutes. Continue?"
        )
        if askConfirmation and not self._ask("Install CSpineAI dependencies", message):
            self.onProgress(0.0, "Installation cancelled: nothing was changed.")
            return False
        commands = self.pipCommands()
        steps = len(commands) + (1 if self.torchMissing() else 0)
        done = 0
        if self.torchMissing():
            self.onProgress(0.0, "Installing PyTorch through the PyTorch extension (this can take several minutes)...")
            self._installTorch()
            done += 1
        for arguments in commands:
            self.onProgress(done / steps, f"Installing {' '.join(arguments)} ...")
            try:
                self._pipInstall(arguments)
            except Exception as error:
                raise RuntimeError(f"Installing {arguments[0]} failed: {error}") from error
            done += 1
        still = self.missingRequirements()
        if still:
            raise RuntimeError(
                "These packages are still missing after the installation: " + ", ".join(still) + ". "
                "Restart Slicer and open the module again; if they are still missing, install them from the Python "
                "console with slicer.util.pip_install."
            )
        self.onProgress(1.0, "All CSpineAI dependencies are installed.")
        return True

    def _installTorch(self) -> None:
        logic = self._torchLogic()
        specifier = str(Requirement(TORCH_REQUIREMENT).specifier)
        if logic.installTorch(askConfirmation=False, torchVersionRequirement=specifier) is None:
            raise RuntimeError("PyTorch could not be installed by the PyTorch extension; see its messages in the log.")


def formatMissing(requirements: Sequence[str]) -> str:
    """One line for the panel's status label."""
    return "Missing Python packages: " + ", ".join(requirements) if requirements else "All dependencies installed."
