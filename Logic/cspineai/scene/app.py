"""The MRML scene and module logics, inside desktop Slicer or on the Qt-free ``slicer-core`` wheel.

Inside the desktop application the real ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` are used. Outside
it (command line, tests, CI) :func:`create_context` builds what the application would: a scene with the "default"
crosshair, an application logic with the default colour nodes, and the module logics this package needs, each
registered with ``SetModuleLogic`` so that logics that look each other up (Data asks for Markups when it saves a scene)
find them. The first context built outside Slicer is installed as ``slicer.mrmlScene`` plus a small ``slicer.modules``
namespace, which is all ``slicer.util``'s array helpers need.
"""

from __future__ import annotations

import dataclasses
import tempfile
import types
from pathlib import Path
from typing import Any

#: Module logics of the Qt-free set-up: name used by ``slicer.modules`` -> class name in ``slicer``.
#: Markups must be present or a saved scene silently loses its control points. The Terminologies logic is left out: the
#: wheel ships none of its JSON files (it would only log load failures) and segment codes need only its static methods.
MODULE_LOGICS = {
    "colors": "vtkSlicerColorLogic",
    "volumes": "vtkSlicerVolumesLogic",
    "segmentations": "vtkSlicerSegmentationsModuleLogic",
    "subjecthierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "transforms": "vtkSlicerTransformLogic",
    "tables": "vtkSlicerTablesLogic",
    "markups": "vtkSlicerMarkupsLogic",
    "data": "vtkSlicerDataModuleLogic",
}
# The name each logic is registered under with SetModuleLogic (the desktop module names).
_REGISTERED_NAME = {
    "colors": "Colors",
    "volumes": "Volumes",
    "segmentations": "Segmentations",
    "subjecthierarchy": "SubjectHierarchy",
    "transforms": "Transforms",
    "tables": "Tables",
    "markups": "Markups",
    "data": "Data",
}


@dataclasses.dataclass
class SlicerContext:
    """One MRML scene with its application logic and module logics.

    Attributes:
        scene: the ``vtkMRMLScene``.
        application_logic: ``vtkSlicerApplicationLogic`` (None inside desktop Slicer, where the application owns it).
        logics: module logic per lower-case module name (``"volumes"``, ``"segmentations"``...).
        desktop: True when this is the running desktop application's scene.
    """

    scene: Any
    application_logic: Any = None
    logics: dict[str, Any] = dataclasses.field(default_factory=dict)
    desktop: bool = False
    # Objects that must live as long as the scene (remote IO, cache folder) but are never used directly.
    _keep_alive: list[Any] = dataclasses.field(default_factory=list, repr=False)

    def logic(self, name: str) -> Any:
        """The module logic called ``name`` (``"volumes"``, ``"segmentations"``, ``"transforms"``...)."""
        name = name.lower()
        if self.desktop:
            import slicer

            return getattr(slicer.modules, name).logic()
        if name not in self.logics:
            raise KeyError(f"no {name!r} module logic in this scene set-up; known: {sorted(self.logics)}")
        return self.logics[name]


_DEFAULT: SlicerContext | None = None


def in_desktop_slicer() -> bool:
    """True when running inside the desktop application (``slicer.app`` exists)."""
    import slicer

    return getattr(slicer, "app", None) is not None


def create_context() -> SlicerContext:
    """Build a fresh, independent scene with its logics (the Qt-free application set-up); nothing global changes.

    Use it for reloading a saved scene beside the current one, and in tests. Inside desktop Slicer prefer
    :func:`get_context`.
    """
    import slicer
    from vtkmodules.vtkCommonCore import vtkCollection

    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)

    # One private folder serves as the application's home/temporary path and the remote-IO cache: the colour logic
    # looks for colour files under the home folder (finding none is fine) and .mrb reading unpacks into the cache.
    work_dir = tempfile.TemporaryDirectory(prefix="cspineai-mrml-")
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetHomeDirectory(work_dir.name)
    app_logic.SetTemporaryPath(work_dir.name)
    app_logic.SetShareDirectory("share")  # relative to the home folder
    (Path(work_dir.name) / "share" / "ColorFiles").mkdir(parents=True)
    app_logic.SetMRMLScene(scene)
    color_logic = slicer.vtkSlicerColorLogic()
    color_logic.SetMRMLApplicationLogic(app_logic)
    color_logic.SetMRMLScene(scene)  # adds the built-in colour tables (Grey, GenericAnatomyColors, ...)
    app_logic.SetColorLogic(color_logic)
    app_logic.SetSliceLogics(vtkCollection())
    app_logic.SetViewLogics(vtkCollection())

    logics: dict[str, Any] = {"colors": color_logic}
    for name, class_name in MODULE_LOGICS.items():
        if name == "colors":
            logic = color_logic
        else:
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(app_logic)
            logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(_REGISTERED_NAME[name], logic)
        logics[name] = logic

    # Reading .mrb needs the remote IO logic (it installs the data IO manager that unpacks the bundle).
    remote_io = slicer.vtkMRMLRemoteIOLogic()
    remote_io.SetMRMLScene(scene)
    remote_io.GetCacheManager().SetRemoteCacheDirectory(work_dir.name)
    data_io = slicer.vtkDataIOManagerLogic()
    data_io.SetMRMLApplicationLogic(app_logic)
    data_io.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    remote_io.AddDataIOToScene()

    return SlicerContext(scene, app_logic, logics, desktop=False, _keep_alive=[work_dir, remote_io, data_io])


def get_context() -> SlicerContext:
    """The scene everything is added to by default: desktop Slicer's own, or one Qt-free set-up made once.

    Outside Slicer the first call also sets ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` so that
    ``slicer.util`` helpers (``arrayFromVolume``, ``updateTableFromArray``, ...) work unchanged.
    """
    global _DEFAULT
    import slicer

    if in_desktop_slicer():
        return SlicerContext(slicer.mrmlScene, desktop=True)
    if _DEFAULT is None:
        _DEFAULT = create_context()
        _install(_DEFAULT)
    return _DEFAULT


def reset_default_context() -> SlicerContext:
    """Clear the default scene (outside Slicer: replace it by a fresh set-up) and return it."""
    global _DEFAULT
    if in_desktop_slicer():
        context = get_context()
        context.scene.Clear(False)
        return context
    _DEFAULT = create_context()
    _install(_DEFAULT)
    return _DEFAULT


def _install(context: SlicerContext) -> None:
    import slicer

    slicer.mrmlScene = context.scene
    modules = types.SimpleNamespace()
    for name, logic in context.logics.items():
        # Bind ``logic`` now: a bare lambda would see the loop's last value.
        setattr(modules, name, types.SimpleNamespace(logic=lambda logic=logic: logic))
    slicer.modules = modules


def resolve(context: SlicerContext | None) -> SlicerContext:
    """``context`` itself, or the default one when None (the helper every public function uses)."""
    return context if context is not None else get_context()
