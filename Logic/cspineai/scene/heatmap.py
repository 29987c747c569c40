"""Saliency heatmaps in the scene: a perceptual colour table and a thresholded foreground volume.

Slicer ships no Inferno/Viridis table in the ``slicer-core`` wheel (they are file-based in the application), so the
table is built in code from matplotlib's published colour map data (256 entries, the map's native resolution). Inferno
is perceptually uniform and monotonic in lightness: a brighter voxel always means a larger value, also in greyscale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CSpineInputError
from ..volume import Volume
from .app import SlicerContext, resolve
from .volumes import volume_to_node

COLORMAP_ENTRIES = 256


def colormap_rgb(name: str = "inferno", entries: int = COLORMAP_ENTRIES) -> np.ndarray:
    """``(entries, 3)`` RGB values in [0, 1] of a matplotlib colour map (low to high)."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colour map {name!r}") from None
    return np.asarray(cmap(np.linspace(0.0, 1.0, entries)))[:, :3]


def colormap_table_node(name: str = "inferno", context: SlicerContext | None = None) -> Any:
    """The scene's colour table node for ``name`` (e.g. "Inferno"), created once per scene (256 entries)."""
    scene = resolve(context).scene
    node_name = name.capitalize()
    node = scene.GetFirstNodeByName(node_name)
    if node is not None and node.IsA("vtkMRMLColorTableNode"):
        return node
    rgb = colormap_rgb(name.lower())
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", node_name)
    node.SetTypeToUser()
    node.SetNumberOfColors(len(rgb))
    for index, (r, g, b) in enumerate(rgb):
        node.SetColor(index, f"{node_name} {index}", float(r), float(g), float(b), 1.0)
    # Continuous data: interpolate between entries instead of showing 256 steps.
    node.GetLookupTable().SetRampToLinear()
    node.GetLookupTable().SetTableRange(0.0, len(rgb) - 1.0)
    return node


def heatmap_to_node(
    heatmap: Volume,
    name: str = "Heatmap",
    threshold: float = 0.05,
    colormap: str = "inferno",
    context: SlicerContext | None = None,
) -> Any:
    """Add a saliency map (values in [0, 1]) as a volume node displayed with a fixed 0..1 window and ``colormap``.

    Args:
        heatmap: saliency on an image grid, already normalised to [0, 1].
        threshold: values below it are transparent, so the anatomy underneath stays visible where saliency is ~0.
    """
    context = resolve(context)
    values = np.asarray(heatmap.array, dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise CSpineInputError(heatmap.source or name, "the heatmap holds NaN or infinite values")
    if values.min() < -1e-6 or values.max() > 1 + 1e-6:
        raise CSpineInputError(
            heatmap.source or name, f"heatmap values must lie in [0, 1], found {values.min():.3g}..{values.max():.3g}"
        )
    node = volume_to_node(heatmap.with_array(values), name, context=context)
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(colormap_table_node(colormap, context).GetID())
    display.AutoWindowLevelOff()
    # Fixed 0..1 window: two heatmaps look alike only if the same value has the same colour in both.
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(float(threshold))
    display.SetUpperThreshold(1.0 + 1e-3)
    display.AutoThresholdOff()
    return node


def show_in_slice_views(
    background: Any = None,
    foreground: Any = None,
    label: Any = None,
    foreground_opacity: float = 0.5,
    context: SlicerContext | None = None,
) -> None:
    """Set the layers of every slice view in the scene (nodes or None to leave a layer unchanged)."""
    scene = resolve(context).scene
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
            composite.SetForegroundOpacity(float(foreground_opacity))
        if label is not None:
            composite.SetLabelVolumeID(label.GetID())
