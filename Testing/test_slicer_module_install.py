"""The module's dependency installer, with Slicer's pip, dialog and PyTorch extension replaced by recorders."""

# The stand-ins below implement the module's camelCase interfaces (Slicer's naming), hence the names.
# ruff: noqa: N802, N803, N806

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]

from CSpineAILib.InstallLogic import (  # noqa: E402
    TORCH_REQUIREMENT,
    InstallLogic,
    defaultRequirementsFile,
    readRequirements,
)

SHIPPED = readRequirements(defaultRequirementsFile())


class FakeEnvironment:
    """Slicer's Python as the installer sees it: importable modules with versions; pip installs into it."""

    def __init__(self, installed: dict[str, str]):
        self.installed = dict(installed)  # distribution name -> version
        self.pipCalls: list[list[str]] = []
        self.torchCalls: list[dict] = []
        self.questions: list[str] = []
        self.answer = True
        self.failOn: str | None = None

    def importer(self, importName: str):
        names = {"yaml": "pyyaml"}
        if names.get(importName, importName) not in self.installed:
            raise ImportError(importName)
        return object()

    def versionOf(self, distribution: str) -> str | None:
        return self.installed.get(distribution)

    def pipInstall(self, arguments: list[str]) -> None:
        self.pipCalls.append(arguments)
        requirement = Requirement(arguments[0])
        if self.failOn == requirement.name:
            raise RuntimeError("HTTP 404")
        self.installed[requirement.name] = _someVersionIn(requirement)

    def ask(self, title: str, message: str) -> bool:
        self.questions.append(message)
        return self.answer

    def torchLogic(self):
        environment = self

        class PyTorchUtilsLogic:
            def installTorch(self, askConfirmation=False, torchVersionRequirement=None):
                environment.torchCalls.append({"ask": askConfirmation, "requirement": torchVersionRequirement})
                environment.installed["torch"] = "2.13.0"
                return object()

        return PyTorchUtilsLogic()

    def logic(self, progress: list | None = None) -> InstallLogic:
        return InstallLogic(
            importer=self.importer,
            versionOf=self.versionOf,
            pipInstall=self.pipInstall,
            askConfirmation=self.ask,
            torchLogic=self.torchLogic,
            onProgress=(lambda f, m: progress.append((f, m))) if progress is not None else None,
        )


def _someVersionIn(requirement: Requirement) -> str:
    for candidate in ("1.6.1", "6.0.3", "5.4.2", "3.0.2", "4.70.1", "3.11.2", "1.17.1", "99.0"):
        if requirement.specifier.contains(Version(candidate)):
            return candidate
    raise AssertionError(f"no test version satisfies {requirement}")


def _complete() -> dict[str, str]:
    installed = {"torch": "2.13.0"}
    for requirement in SHIPPED:
        installed[requirement.name] = _someVersionIn(requirement.requirement)
    return installed


def test_shipped_requirements_leave_out_what_slicer_or_the_pytorch_extension_provides():
    names = {requirement.name.lower() for requirement in SHIPPED}
    assert names >= {"monai", "nibabel", "pydicom", "scipy", "pyyaml", "tqdm", "matplotlib"}
    assert not names & {"torch", "numpy", "simpleitk", "slicer-core", "vtk", "torchvision", "timm"}
    monai = next(requirement for requirement in SHIPPED if requirement.name == "monai")
    assert monai.noDeps, "monai must be installed without its dependencies, or pip pulls a torch from PyPI"


def test_shipped_ranges_match_pyproject_and_admit_the_pinned_versions():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    ranges = {Requirement(line).name.lower(): Requirement(line).specifier for line in pyproject}
    pins = {}
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith(("#", "-")):
            requirement = Requirement(line.split("#")[0].strip())
            pins[requirement.name.lower()] = next(iter(requirement.specifier)).version
    for requirement in SHIPPED:
        name = requirement.name.lower()
        assert requirement.requirement.specifier == ranges[name], f"{name}: differs from pyproject.toml"
        assert requirement.requirement.specifier.contains(Version(pins[name])), f"{name}: excludes requirements.txt"
    assert Requirement(TORCH_REQUIREMENT).specifier.contains(Version(pins["torch"]))


def test_reports_nothing_missing_and_asks_nothing_when_all_is_installed():
    environment = FakeEnvironment(_complete())
    logic = environment.logic()
    assert logic.missingRequirements() == []
    assert logic.setupPythonRequirements() is True
    assert environment.questions == [] and environment.pipCalls == [] and environment.torchCalls == []


def test_detects_missing_and_out_of_range_packages_through_the_injected_importer():
    installed = _complete()
    del installed["nibabel"]
    installed["monai"] = "1.5.2"  # importable but too old
    logic = FakeEnvironment(installed).logic()
    assert logic.missingRequirements() == ["nibabel>=5.4", "monai<1.7,>=1.6"]
    assert logic.pipCommands() == [["nibabel>=5.4"], ["monai<1.7,>=1.6", "--no-deps"]]


def test_installs_torch_through_the_pytorch_extension_first_then_pip_in_order_with_progress():
    installed = _complete()
    for name in ("torch", "monai", "pyyaml"):
        del installed[name]
    environment = FakeEnvironment(installed)
    progress: list = []
    logic = environment.logic(progress)
    assert logic.missingRequirements()[0] == f"{TORCH_REQUIREMENT} (PyTorch extension)"

    assert logic.setupPythonRequirements(askConfirmation=True) is True

    assert len(environment.questions) == 1 and "monai" in environment.questions[0]
    assert environment.torchCalls == [{"ask": False, "requirement": ">=2.4"}]
    assert environment.pipCalls == [["pyyaml>=6.0"], ["monai<1.7,>=1.6", "--no-deps"]]
    fractions = [fraction for fraction, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert logic.missingRequirements() == []


def test_changes_nothing_when_the_user_declines():
    installed = _complete()
    del installed["scipy"]
    environment = FakeEnvironment(installed)
    environment.answer = False
    assert environment.logic().setupPythonRequirements(askConfirmation=True) is False
    assert environment.pipCalls == [] and environment.torchCalls == []


def test_reports_which_package_failed_to_install():
    installed = _complete()
    del installed["pydicom"]
    environment = FakeEnvironment(installed)
    environment.failOn = "pydicom"
    with pytest.raises(RuntimeError, match=r"Installing pydicom>=3.0 failed: HTTP 404"):
        environment.logic().setupPythonRequirements(askConfirmation=False)


def test_reports_packages_still_missing_after_an_install_that_did_not_take():
    installed = _complete()
    del installed["tqdm"]
    environment = FakeEnvironment(installed)
    environment.pipInstall = lambda arguments: environment.pipCalls.append(
        arguments
    )  # pip "succeeds", installs nothing
    with pytest.raises(RuntimeError, match="still missing.*tqdm"):
        environment.logic().setupPythonRequirements(askConfirmation=False)


def test_constructing_the_installer_neither_asks_nor_installs():
    environment = FakeEnvironment({})
    environment.logic()
    assert environment.questions == [] and environment.pipCalls == [] and environment.torchCalls == []


def test_rejects_a_malformed_requirements_line_naming_the_line(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# header\nmonai>=1.6\nnot a requirement !!\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3"):
        readRequirements(path)


def test_default_check_sees_this_environment_complete_without_importing_torch():
    # In a fresh interpreter: Slicer's process must not pay for (or be changed by) importing torch just to check.
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'CSpineAI')!r});"
        "from CSpineAILib.InstallLogic import InstallLogic;"
        "print(InstallLogic().missingRequirements(), 'monai' in sys.modules, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["[]", "False", "False"]
