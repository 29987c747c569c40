"""Rows (list of dicts) <-> ``vtkMRMLTableNode`` with typed columns (int, double, string) and units.

Typed columns matter: a table saved with the scene is written as ``.tsv`` plus ``.schema.tsv`` (types, units,
descriptions) and comes back with numbers as numbers, so a morphometry table reloaded from a bundle sorts and plots
correctly in Slicer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import CSpineInputError
from .app import SlicerContext, resolve

COLUMN_TYPES = ("int", "double", "string")


@dataclasses.dataclass(frozen=True)
class Column:
    """One table column: name, type ("int", "double" or "string"), unit (e.g. "mm2") and description."""

    name: str
    type: str = "double"
    unit: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise ValueError(f"column {self.name!r}: type must be one of {COLUMN_TYPES}, not {self.type!r}")


def infer_columns(rows: Sequence[dict]) -> list[Column]:
    """Columns in first-seen order, typed from the values (int < double < string; bool counts as int)."""
    order: dict[str, str] = {}
    rank = {"int": 0, "double": 1, "string": 2}
    for row in rows:
        for key, value in row.items():
            if value is None:
                kind = "int"
            elif isinstance(value, bool | int | np.integer):
                kind = "int"
            elif isinstance(value, float | np.floating):
                kind = "double"
            else:
                kind = "string"
            previous = order.get(key)
            order[key] = kind if previous is None or rank[kind] > rank[previous] else previous
    return [Column(name, kind) for name, kind in order.items()]


def _vtk_array(column: Column) -> Any:
    from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkIntArray, vtkStringArray

    array = {"int": vtkIntArray, "double": vtkDoubleArray, "string": vtkStringArray}[column.type]()
    array.SetName(column.name)
    return array


def _convert(value: Any, column: Column, row_index: int) -> Any:
    try:
        if column.type == "string":
            return "" if value is None else str(value)
        if column.type == "int":
            if value is None:
                raise CSpineInputError(
                    column.name, f"row {row_index}: missing integer value (int columns hold no gaps)"
                )
            return int(value)
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        raise CSpineInputError(column.name, f"row {row_index}: value {value!r} is not a valid {column.type}") from None


def rows_to_table_node(
    rows: Sequence[dict],
    name: str = "Table",
    columns: Iterable[Column] | None = None,
    context: SlicerContext | None = None,
    node: Any = None,
) -> Any:
    """A table node holding ``rows`` (one dict per row), columns typed and with units.

    Args:
        rows: the records; missing keys become empty strings / NaN.
        columns: column names, types and units in display order (default: inferred from the values, no units).
        node: fill this existing table node (its columns are replaced) instead of adding a new one.
    """
    columns = list(columns) if columns is not None else infer_columns(rows)
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise CSpineInputError(name, f"duplicate column names in {names}")
    if node is None:
        node = resolve(context).scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    was_modifying = node.StartModify()
    try:
        node.RemoveAllColumns()
        for column in columns:
            array = _vtk_array(column)
            array.SetNumberOfValues(len(rows))
            for index, row in enumerate(rows):
                array.SetValue(index, _convert(row.get(column.name), column, index))
            table.AddColumn(array)
            if column.unit:
                node.SetColumnUnitLabel(column.name, column.unit)
            if column.description:
                node.SetColumnDescription(column.name, column.description)
        table.Modified()
    finally:
        node.EndModify(was_modifying)
    return node


def table_columns(node: Any) -> list[Column]:
    """Name, type, unit and description of each column of a table node."""
    table = node.GetTable()
    columns = []
    for index in range(table.GetNumberOfColumns()):
        array = table.GetColumn(index)
        if array.IsA("vtkStringArray"):
            kind = "string"
        elif array.IsA("vtkFloatArray") or array.IsA("vtkDoubleArray"):
            kind = "double"
        else:
            kind = "int"
        name = array.GetName()
        columns.append(Column(name, kind, node.GetColumnUnitLabel(name) or "", node.GetColumnDescription(name) or ""))
    return columns


def table_node_to_rows(node: Any) -> list[dict]:
    """The rows of a table node as dicts with Python int / float / str values."""
    table = node.GetTable()
    columns = table_columns(node)
    caster = {"int": int, "double": float, "string": str}
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for index, column in enumerate(columns):
            array = table.GetColumn(index)
            row[column.name] = caster[column.type](array.GetValue(r))
        rows.append(row)
    return rows


def columns_to_table_node(
    data: dict[str, Sequence],
    name: str = "Table",
    columns: Iterable[Column] | None = None,
    context: SlicerContext | None = None,
) -> Any:
    """A table node from column-oriented data (``{"level": [...], "csa": array}``, all of one length)."""
    lengths = {key: len(values) for key, values in data.items()}
    if len(set(lengths.values())) > 1:
        raise CSpineInputError(name, f"columns have different lengths: {lengths}")
    count = next(iter(lengths.values()), 0)
    rows = [{key: _python_scalar(values[index]) for key, values in data.items()} for index in range(count)]
    return rows_to_table_node(rows, name, columns, context)


def _python_scalar(value: Any) -> Any:
    # numpy scalars would otherwise be typed by their numpy class in infer_columns; .item() gives int/float/str.
    return value.item() if isinstance(value, np.generic) else value


def table_node_to_columns(node: Any) -> dict[str, np.ndarray]:
    """The columns of a table node as numpy arrays (int64, float64 or str)."""
    rows = table_node_to_rows(node)
    dtypes = {"int": np.int64, "double": np.float64, "string": str}
    return {
        column.name: np.array([row[column.name] for row in rows], dtype=dtypes[column.type])
        for column in table_columns(node)
    }
