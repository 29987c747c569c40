"""Table nodes keep typed columns and units; heatmaps use a 256-entry Inferno table and a fixed 0..1 window."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cspineai.errors import CSpineInputError
from helpers import make_volume

pytest.importorskip("slicer")

from cspineai.scene import (  # noqa: E402
    Column,
    colormap_table_node,
    columns_to_table_node,
    create_context,
    heatmap_to_node,
    rows_to_table_node,
    show_in_slice_views,
    table_columns,
    table_node_to_columns,
    table_node_to_rows,
    volume_to_node,
)
from cspineai.scene.render import slice_logic  # noqa: E402

MORPHOMETRY = [
    Column("level", "string", "", "vertebral level"),
    Column("slices", "int", "", "slices averaged"),
    Column("csa", "double", "mm2", "cord cross-sectional area"),
]


@pytest.fixture
def context():
    return create_context()


def test_table_keeps_typed_columns_units_and_values(context):
    rows = [{"level": "C3", "slices": 4, "csa": 71.25}, {"level": "C4", "slices": 5, "csa": 64.5}]
    node = rows_to_table_node(rows, "Morphometry", MORPHOMETRY, context=context)
    table = node.GetTable()
    assert table.GetColumn(0).IsA("vtkStringArray")
    assert table.GetColumn(1).IsA("vtkIntArray")
    assert table.GetColumn(2).IsA("vtkDoubleArray")
    assert table_columns(node) == MORPHOMETRY
    assert node.GetColumnUnitLabel("csa") == "mm2"
    back = table_node_to_rows(node)
    assert back == rows
    assert isinstance(back[0]["slices"], int) and isinstance(back[0]["csa"], float)


def test_column_oriented_data_round_trips_with_numpy_types(context):
    data = {"level": ["C3", "C4", "C5"], "slices": np.array([4, 5, 6]), "csa": np.array([70.0, 65.5, 60.25])}
    node = columns_to_table_node(data, "Morphometry", context=context)
    assert [(c.name, c.type) for c in table_columns(node)] == [
        ("level", "string"),
        ("slices", "int"),
        ("csa", "double"),
    ]
    back = table_node_to_columns(node)
    assert list(back["level"]) == data["level"]
    assert np.array_equal(back["slices"], data["slices"]) and back["slices"].dtype == np.int64
    assert np.array_equal(back["csa"], data["csa"])
    with pytest.raises(CSpineInputError, match="different lengths"):
        columns_to_table_node({"a": [1, 2], "b": [1]}, context=context)


def test_column_types_are_inferred_from_values_when_not_given(context):
    rows = [{"name": "a", "n": 1, "x": 1}, {"name": "b", "n": 2, "x": 2.5}]
    node = rows_to_table_node(rows, context=context)
    assert [(c.name, c.type) for c in table_columns(node)] == [("name", "string"), ("n", "int"), ("x", "double")]


def test_missing_double_becomes_nan_and_missing_string_empty(context):
    node = rows_to_table_node([{"level": "C5", "slices": 1}], columns=MORPHOMETRY, context=context)
    row = table_node_to_rows(node)[0]
    assert math.isnan(row["csa"])
    node = rows_to_table_node([{"slices": 1, "csa": 2.0}], columns=MORPHOMETRY, context=context)
    assert table_node_to_rows(node)[0]["level"] == ""


def test_reports_error_when_a_value_does_not_fit_its_column_type(context):
    with pytest.raises(CSpineInputError, match="not a valid int"):
        rows_to_table_node([{"level": "C3", "slices": "four", "csa": 1.0}], columns=MORPHOMETRY, context=context)


def test_inferno_colour_table_has_256_entries_matching_matplotlib(context):
    import matplotlib

    node = colormap_table_node("inferno", context=context)
    assert node.GetName() == "Inferno"
    assert node.GetNumberOfColors() == 256
    expected = matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3]
    got = np.array([node.GetLookupTable().GetTableValue(n)[:3] for n in range(256)])
    # The lookup table stores 8-bit colours: equal to matplotlib's values within one step of 1/255.
    assert np.allclose(got, expected, atol=1 / 255)
    # Dark to bright: Inferno's lightness rises monotonically.
    luminance = got @ np.array([0.2126, 0.7152, 0.0722])
    assert luminance[0] < 0.05 and luminance[-1] > 0.9
    assert colormap_table_node("inferno", context=context) is node  # made once per scene


def test_heatmap_node_uses_fixed_window_inferno_and_hides_near_zero(context):
    image = make_volume("axial")
    saliency = image.with_array(np.linspace(0, 1, image.array.size, dtype=np.float32).reshape(image.shape))
    node = heatmap_to_node(saliency, "saliency", threshold=0.1, context=context)
    display = node.GetDisplayNode()
    assert display.GetColorNode().GetName() == "Inferno"
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.1)


def test_heatmap_is_shown_as_slice_view_foreground(context):
    image = make_volume("axial")
    background = volume_to_node(image, "anatomy", context=context)
    heatmap = heatmap_to_node(image.with_array(np.full(image.shape, 0.5, np.float32)), context=context)
    composite = slice_logic("Axial", context).GetSliceCompositeNode()
    show_in_slice_views(background=background, foreground=heatmap, foreground_opacity=0.4, context=context)
    assert composite.GetBackgroundVolumeID() == background.GetID()
    assert composite.GetForegroundVolumeID() == heatmap.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.4)


def test_reports_error_when_heatmap_is_not_normalised(context):
    image = make_volume("axial")
    with pytest.raises(CSpineInputError, match=r"\[0, 1\]"):
        heatmap_to_node(image.with_array(image.array.astype(np.float32)), context=context)
