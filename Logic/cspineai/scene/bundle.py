"""Saving a scene as a Slicer data bundle (``.mrb`` file or folder) and loading one into a fresh scene.

A ``.mrb`` is a zip of a folder holding the ``.mrml`` scene description and one file per storable node (volumes as
``.nrrd``, segmentations as ``.seg.nrrd``, grid transforms as ``.h5``, tables as ``.tsv`` + ``.schema.tsv``). Desktop
Slicer opens either form with File > Add Data / drag and drop. Both writers here are atomic.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from pathlib import Path

from ..atomic import atomic_directory
from ..errors import CSpineInputError
from .app import SlicerContext, create_context, resolve


def _prepare(context: SlicerContext) -> None:
    # The .mrml header keeps the wheel's own version string ("slicer-core 4.0.0 0"). Desktop Slicer may mention it on
    # load; a made-up "Slicer x.y.z rev" could instead switch on its legacy-scene conversions, so it is left as is.
    scene = context.scene
    # Storable nodes added in code have no storage node yet; the bundle writer needs one per node to write its file.
    nodes = scene.GetNodesByClass("vtkMRMLStorableNode")
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        if node.GetStorageNode() is None and node.GetSaveWithScene():
            node.AddDefaultStorageNode()


def save_bundle(path: str | os.PathLike, context: SlicerContext | None = None) -> Path:
    """Write the whole scene as one ``.mrb`` file (atomically) and return its path."""
    context = resolve(context)
    path = Path(path).absolute()
    if path.suffix.lower() != ".mrb":
        raise CSpineInputError(path, "a scene bundle file must end in .mrb")
    _prepare(context)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Slicer names the folder inside the zip after the file, so write under the final name in a private temporary
    # folder beside the target, then move it into place (atomic on one file system).
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        with _bundle_io():
            written = context.scene.WriteToMRB(str(staged))
        if not written or not staged.is_file():
            raise CSpineInputError(path, "Slicer could not write the scene bundle")
        os.replace(staged, path)
    return path


@contextlib.contextmanager
def _bundle_io():
    """Around Slicer's zip reading/writing: silence its per-file "Zip: adding ..." messages (results are checked
    instead) and restore the working directory, which its unzip changes and does not restore when reading fails."""
    from vtkmodules.vtkCommonCore import vtkOutputWindow

    window = vtkOutputWindow.GetInstance()
    previous = window.GetDisplayMode()
    cwd = os.getcwd()
    window.SetDisplayModeToNever()
    try:
        yield
    finally:
        window.SetDisplayMode(previous)
        os.chdir(cwd)


def save_bundle_directory(
    directory: str | os.PathLike, context: SlicerContext | None = None, overwrite: bool = False
) -> Path:
    """Write the scene as a bundle folder (``<name>.mrml`` + ``Data/``), atomically; return the ``.mrml`` path."""
    context = resolve(context)
    directory = Path(directory).absolute()
    _prepare(context)
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        if not context.scene.SaveSceneToSlicerDataBundleDirectory(str(tmp.absolute())):
            raise CSpineInputError(directory, "Slicer could not write the scene folder")
        # Slicer names the .mrml after the folder it was given (the temporary one): give it the final folder's name.
        for mrml in tmp.glob("*.mrml"):
            mrml.rename(tmp / f"{directory.name}.mrml")
    return directory / f"{directory.name}.mrml"


def load_bundle(path: str | os.PathLike, context: SlicerContext | None = None) -> SlicerContext:
    """Load a ``.mrb`` file, a bundle folder or a ``.mrml`` file into ``context`` (default: a fresh scene).

    Returns the context holding the loaded nodes. Nodes are added to what the scene already holds.
    """
    path = Path(path).absolute()
    context = context if context is not None else create_context()
    scene = context.scene
    if not path.exists():
        raise CSpineInputError(path, "scene bundle not found")
    if path.is_file() and path.suffix.lower() == ".mrb":
        if not zipfile.is_zipfile(path):
            raise CSpineInputError(path, "not a Slicer scene bundle (a .mrb is a zip archive; this file is not one)")
        with _bundle_io():
            loaded = scene.ReadFromMRB(str(path))
        if not loaded:
            raise CSpineInputError(path, "not a readable Slicer scene bundle (.mrb)")
        return context
    if path.is_dir():
        candidates = sorted(path.glob("*.mrml"))
        if len(candidates) != 1:
            raise CSpineInputError(path, f"expected one .mrml scene file in the folder, found {len(candidates)}")
        path = candidates[0]
    if path.suffix.lower() != ".mrml":
        raise CSpineInputError(path, "expected a .mrb file, a .mrml file or a bundle folder")
    scene.SetURL(str(path))
    if not scene.Import():
        raise CSpineInputError(path, "Slicer could not load the scene file")
    return context
