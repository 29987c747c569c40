"""The case manifest: one CSV that lists a cohort's cases, their series, labels and folds.

The synthetic cohort writes it and a real site writes the same format by hand (see ``docs/data.md``). Paths are relative
to the folder of the manifest (absolute paths are allowed). Empty cells mean "not available for this case".

Columns (only ``case_id`` is required; the others are used by the tasks that need them):

- ``case_id``: unique, no patient identifiers;
- ``label``: postoperative neck pain, 0 or 1;
- ``fold``: cross-validation fold 0..K-1, split by patient; ``split``: ``train`` or ``test``;
- one column per series (``CT_bone``, ``CT_tissue``, ``T1_sag``, ``T2_sag``, ``T2_tra``) with the image path;
- ``<series>_labels``: label map on that series' grid (values of :mod:`cspineai.series`);
- ``displacement``: true MRI->CT displacement field (synthetic cohort); ``landmarks``, ``clinical``, ``causal_mask``:
  per-case JSON / label files; ``radiograph``: lateral radiograph (the synthetic cohort's DRR);
- any further column (clinical covariates such as ``age``) is kept as text in :attr:`Case.fields`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path

from .atomic import atomic_write_text
from .errors import CSpineInputError
from .series import SERIES

PATH_COLUMNS = (
    *SERIES,
    *(f"{s}_labels" for s in SERIES),
    "displacement",
    "landmarks",
    "clinical",
    "causal_mask",
    "radiograph",
)


@dataclasses.dataclass
class Case:
    """One row of a manifest with its paths resolved."""

    case_id: str
    label: int | None = None
    fold: int | None = None
    split: str = ""
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    fields: dict[str, str] = dataclasses.field(default_factory=dict)

    def path(self, column: str) -> Path:
        """The file of ``column``; raise a clear error when this case does not have it."""
        if column not in self.paths:
            raise CSpineInputError(f"case {self.case_id}", f"has no {column} (empty or missing manifest column)")
        return self.paths[column]


def read_manifest(path: str | os.PathLike, require: tuple[str, ...] = (), check_files: bool = True) -> list[Case]:
    """Read ``manifest.csv``; ``require`` lists columns every case must have (e.g. ``("T1_sag", "CT_bone", "label")``).

    With ``check_files`` every referenced file must exist; the first missing one is named in the error, before any work.
    """
    path = Path(path)
    if not path.is_file():
        raise CSpineInputError(path, "manifest not found")
    text = path.read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise CSpineInputError(path, "the manifest lists no cases")
    columns = set(rows[0])
    if "case_id" not in columns:
        raise CSpineInputError(path, "the manifest has no case_id column")
    missing_columns = [c for c in require if c not in columns]
    if missing_columns:
        raise CSpineInputError(path, f"the manifest lacks required column(s): {', '.join(missing_columns)}")
    cases, seen = [], set()
    for line, row in enumerate(rows, start=2):
        where = f"{path}, line {line}"
        case_id = (row.get("case_id") or "").strip()
        if not case_id:
            raise CSpineInputError(where, "empty case_id")
        if case_id in seen:
            raise CSpineInputError(where, f"case_id {case_id!r} appears twice")
        seen.add(case_id)
        case = Case(case_id=case_id, split=(row.get("split") or "").strip())
        for key, parse in (("label", int), ("fold", int)):
            value = (row.get(key) or "").strip()
            if value:
                try:
                    setattr(case, key, parse(float(value)))
                except ValueError:
                    raise CSpineInputError(where, f"{key} {value!r} is not a whole number") from None
        if case.label is not None and case.label not in (0, 1):
            raise CSpineInputError(where, f"label must be 0 or 1, not {case.label}")
        for column in PATH_COLUMNS:
            value = (row.get(column) or "").strip()
            if value:
                file = Path(value) if os.path.isabs(value) else path.parent / value
                if check_files and not file.exists():
                    raise CSpineInputError(where, f"{column} file not found: {file}")
                case.paths[column] = file
        for column in require:
            if column in ("label", "fold") and getattr(case, column) is None:
                raise CSpineInputError(where, f"case {case_id} has no {column}")
            if column in PATH_COLUMNS and column not in case.paths:
                raise CSpineInputError(where, f"case {case_id} has no {column}")
        case.fields = {k: v for k, v in row.items() if k not in ("case_id", "label", "fold", "split", *PATH_COLUMNS)}
        cases.append(case)
    return cases


def write_manifest(cases: list[Case], path: str | os.PathLike, extra_columns: tuple[str, ...] = ()) -> Path:
    """Write ``cases`` as ``manifest.csv`` (atomically), with paths relative to the manifest's folder when possible."""
    path = Path(path)
    used = [c for c in PATH_COLUMNS if any(c in case.paths for case in cases)]
    extra = list(extra_columns) or sorted({k for case in cases for k in case.fields})
    header = ["case_id", "label", "fold", "split", *used, *extra]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for case in cases:
        row = {
            "case_id": case.case_id,
            "label": "" if case.label is None else case.label,
            "fold": "" if case.fold is None else case.fold,
            "split": case.split,
        }
        for column in used:
            file = case.paths.get(column)
            if file is not None:
                try:
                    file = Path(os.path.relpath(file, path.parent))
                except ValueError:  # another drive on Windows
                    pass
                row[column] = file.as_posix()
        row.update({k: case.fields.get(k, "") for k in extra})
        writer.writerow(row)
    return atomic_write_text(path, buffer.getvalue())
