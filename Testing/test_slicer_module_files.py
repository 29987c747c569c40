"""The extension's files stay consistent: CMake lists, the .ui against the parameter node and widget, the module
shell, the icon, and ruff on the module. These catch the rot that only shows when desktop Slicer loads the module."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "CSpineAI"
LIB = MODULE / "CSpineAILib"
sys.path.insert(0, str(MODULE))

from CSpineAILib.Logic import MODEL_ROLES, SERIES, STEPS  # noqa: E402


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} is not set"
    module = re.search(r"set\(MODULE_NAME\s+(\w+)\)", text)[1]
    return [entry.replace("${MODULE_NAME}", module) for entry in match[1].split()]


def _class_fields(path: Path, class_name: str) -> list[str]:
    """Annotated fields of a class, read from the source (Parameter.py needs Slicer's application to import)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name)
    return [node.target.id for node in cls.body if isinstance(node, ast.AnnAssign)]


def _module_dict(path: Path, name: str) -> dict:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == name)
    return ast.literal_eval(node.value)


UI = ET.parse(MODULE / "Resources" / "UI" / "CSpineAI.ui")


def _ui_widgets() -> dict[str, ET.Element]:
    return {widget.get("name"): widget for widget in UI.iter("widget")}


def _parameter_names() -> dict[str, str]:
    """objectName -> SlicerParameterName of every bound widget."""
    bound = {}
    for widget in UI.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", f"{widget.get('name')}: a dynamic property needs stdset=0"
                bound[widget.get("name")] = prop.find("string").text
    return bound


# ---- CMake -------------------------------------------------------------------------------------------------------


def test_every_python_file_of_the_module_is_listed_in_cmake_and_every_listed_file_exists():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    on_disk = sorted(p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts)
    assert sorted(listed) == on_disk
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    assert [r for r in resources if not (MODULE / r).is_file()] == []
    on_disk_resources = sorted(
        p.relative_to(MODULE).as_posix() for p in (MODULE / "Resources").rglob("*") if p.is_file()
    )
    assert sorted(resources) == on_disk_resources


def test_module_cmake_builds_the_scripted_module_and_registers_the_self_test():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}", text)
    assert re.search(r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)
    assert "Logic/cspineai" in text, "the cspineai package must ship with the built extension"


def test_top_level_cmake_declares_a_slicer_extension_depending_on_pytorch():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for needed in (
        r"cmake_minimum_required\(",
        r"project\(CSpineAI\)",
        r'set\(EXTENSION_HOMEPAGE "https://github.com/cspineai/SlicerCSpineAI"\)',
        r'set\(EXTENSION_CATEGORY "Spine"\)',
        r"set\(EXTENSION_CONTRIBUTORS ",
        r"set\(EXTENSION_DESCRIPTION ",
        r"set\(EXTENSION_ICONURL ",
        r"set\(EXTENSION_SCREENSHOTURLS ",
        r'set\(EXTENSION_DEPENDS "PyTorch"\)',
        r"find_package\(Slicer REQUIRED\)",
        r"include\(\$\{Slicer_USE_FILE\}\)",
        r"add_subdirectory\(CSpineAI\)",
        r"include\(\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\)",
        r"include\(\$\{Slicer_EXTENSION_CPACK\}\)",
    ):
        assert re.search(needed, text), f"CMakeLists.txt lacks {needed}"
    assert text.index("find_package(Slicer") < text.index("add_subdirectory(CSpineAI)")


# ---- the .ui against Parameter.py and Widget.py ----------------------------------------------------------------


def test_every_slicer_parameter_name_in_the_ui_is_a_field_of_the_parameter_node_bound_once():
    fields = set(_class_fields(LIB / "Parameter.py", "Parameter"))
    names = list(_parameter_names().values())
    assert sorted(set(names) - fields) == []
    assert len(names) == len(set(names)), "two widgets bound to one parameter"


def test_every_parameter_field_except_model_ids_has_a_widget():
    fields = set(_class_fields(LIB / "Parameter.py", "Parameter"))
    model_fields = set(_module_dict(LIB / "Parameter.py", "MODEL_FIELDS").values())
    assert sorted(fields - set(_parameter_names().values()) - model_fields) == []


def test_parameter_tables_cover_the_logics_series_steps_and_roles():
    fields = set(_class_fields(LIB / "Parameter.py", "Parameter"))
    for table, names in (("SERIES_FIELDS", SERIES), ("STEP_FIELDS", STEPS), ("MODEL_FIELDS", MODEL_ROLES)):
        mapping = _module_dict(LIB / "Parameter.py", table)
        assert tuple(mapping) == names, table
        assert set(mapping.values()) <= fields, table


def test_series_selectors_take_scalar_volumes_only():
    widgets = _ui_widgets()
    for object_name, parameter in _parameter_names().items():
        if parameter in _module_dict(LIB / "Parameter.py", "SERIES_FIELDS").values():
            widget = widgets[object_name]
            assert widget.get("class") == "qMRMLNodeComboBox"
            types = [
                s.text for p in widget.findall("property") if p.get("name") == "nodeTypes" for s in p.iter("string")
            ]
            assert types == ["vtkMRMLScalarVolumeNode"]


def test_every_ui_object_the_widget_uses_exists_in_the_ui():
    source = (LIB / "Widget.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    used |= {f"{field}ComboBox" for field in _module_dict(LIB / "Parameter.py", "MODEL_FIELDS").values()}
    assert sorted(used - set(_ui_widgets())) == []


def test_ui_has_the_panel_sections_in_order():
    sections = [w.find("property/string").text for w in UI.iter("widget") if w.get("class") == "ctkCollapsibleButton"]
    assert sections[:6] == ["Inputs", "Register", "Predict", "Cord", "Models", "Fine-tune"]


def test_ui_declares_every_custom_widget_it_uses():
    declared = {c.find("class").text for c in UI.iter("customwidget")}
    used = {w.get("class") for w in UI.iter("widget")}
    assert sorted({c for c in used if c.startswith(("ctk", "qMRML"))} - declared) == []


# ---- module shell, icon, lint -------------------------------------------------------------------------------------


def test_module_file_is_a_thin_shell_with_slicers_class_names():
    source = (MODULE / "CSpineAI.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 110
    tree = ast.parse(source)
    classes = {node.name: [b.id for b in node.bases] for node in tree.body if isinstance(node, ast.ClassDef)}
    assert classes == {
        "CSpineAI": ["ScriptedLoadableModule"],
        "CSpineAIWidget": ["ScriptedLoadableModuleWidget"],
        "CSpineAITest": ["ScriptedLoadableModuleTest"],
    }
    assert 'categories = ["Spine"]' in source
    assert "import imp\n" not in source
    # Both papers the module implements are cited with their titles.
    assert "predicting postoperative neck pain in cervical spondylosis" in source
    assert "segmentation and quantitative analysis of cervical spinal" in source


def test_reload_list_names_every_library_module():
    tree = ast.parse((MODULE / "CSpineAI.py").read_text(encoding="utf-8"))
    listed = next(
        ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "LIB_MODULES"
    )
    assert sorted(listed) == sorted(p.stem for p in LIB.glob("*.py") if p.stem != "__init__")


def test_every_module_file_compiles():
    for path in MODULE.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_icon_is_a_128_pixel_png():
    data = (MODULE / "Resources" / "Icons" / "CSpineAI.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


def test_ruff_passes_on_the_module():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    done = subprocess.run([ruff, "check", "CSpineAI"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
