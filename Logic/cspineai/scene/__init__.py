"""The Slicer scene layer: the only package of the project that imports ``slicer`` (MRML) or VTK.

Everything here runs the same inside desktop Slicer and on the Qt-free ``slicer-core`` wheel (command line, CI):

- :mod:`.app`: the scene and module logics (:func:`get_context`, :func:`create_context`).
- :mod:`.volumes`: ``Volume`` <-> scalar / label map volume nodes, with exact geometry.
- :mod:`.segmentations`, :mod:`.terminology`: label maps <-> segmentation nodes with names, colours, values and
  SNOMED CT codes.
- :mod:`.transforms`: displacement fields <-> grid transform nodes; applying and hardening transforms.
- :mod:`.tables`: rows <-> table nodes with typed columns and units.
- :mod:`.heatmap`: Inferno colour table and heatmap volume display.
- :mod:`.bundle`: ``.mrb`` and bundle-folder save/load.
- :mod:`.render`: slice-view PNGs without OpenGL.
- :mod:`.case`: a whole case as one scene (:func:`write_case_scene`, :func:`load_case_bundle`).
- :mod:`.results`: a pipeline result as a scene (:func:`write_results_scene`; :func:`load_results` for the module).

Submodules import ``slicer`` inside their functions, so importing this package stays cheap.
"""

from __future__ import annotations

from .app import SlicerContext, create_context, get_context, reset_default_context
from .bundle import load_bundle, save_bundle, save_bundle_directory
from .case import CaseScene, build_case_scene, load_case_bundle, write_case_scene
from .heatmap import colormap_table_node, heatmap_to_node, show_in_slice_views
from .render import compose_views, render_slice_array, render_views_png
from .results import load_results, write_results_scene
from .segmentations import (
    SegmentInfo,
    labelmap_to_segmentation_node,
    segment_infos,
    segmentation_node_to_labelmap,
    segmentation_to_labelmap_node,
)
from .tables import (
    Column,
    columns_to_table_node,
    rows_to_table_node,
    table_columns,
    table_node_to_columns,
    table_node_to_rows,
)
from .terminology import Terminology, terminology_for_label
from .transforms import (
    apply_transform,
    displacement_to_transform_node,
    hardened,
    to_sitk_displacement_transform,
    transform_node_to_displacement,
)
from .volumes import node_to_volume, read_volume_node, update_node_from_volume, volume_to_node

__all__ = [
    "CaseScene",
    "Column",
    "SegmentInfo",
    "SlicerContext",
    "Terminology",
    "apply_transform",
    "build_case_scene",
    "colormap_table_node",
    "columns_to_table_node",
    "compose_views",
    "create_context",
    "displacement_to_transform_node",
    "get_context",
    "hardened",
    "heatmap_to_node",
    "labelmap_to_segmentation_node",
    "load_bundle",
    "load_case_bundle",
    "load_results",
    "write_results_scene",
    "node_to_volume",
    "read_volume_node",
    "render_slice_array",
    "render_views_png",
    "reset_default_context",
    "rows_to_table_node",
    "save_bundle",
    "save_bundle_directory",
    "segment_infos",
    "segmentation_node_to_labelmap",
    "segmentation_to_labelmap_node",
    "show_in_slice_views",
    "table_columns",
    "table_node_to_columns",
    "table_node_to_rows",
    "terminology_for_label",
    "to_sitk_displacement_transform",
    "transform_node_to_displacement",
    "update_node_from_volume",
    "volume_to_node",
    "write_case_scene",
]
