"""Atomic outputs and the case manifest."""

from __future__ import annotations

import os
import stat

import pytest

from cspineai import CSpineInputError
from cspineai.atomic import atomic_directory, atomic_path, atomic_write_text
from cspineai.manifest import Case, read_manifest, write_manifest


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    with pytest.raises(ZeroDivisionError), atomic_path(tmp_path / "out.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_text("half", encoding="utf-8")
        raise ZeroDivisionError
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_the_old_file_whole(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old", encoding="utf-8")
    atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "new" and len(list(tmp_path.iterdir())) == 1


def test_atomic_directory_appears_complete_or_not_at_all(tmp_path):
    out = tmp_path / "results"
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("a", encoding="utf-8")
        raise RuntimeError("cancelled half way")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("a", encoding="utf-8")
    assert (out / "a.txt").read_text(encoding="utf-8") == "a"


def test_atomic_directory_refuses_to_replace_existing_results_unless_asked(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "mine.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(CSpineInputError, match="already exists"), atomic_directory(out):
        pass
    assert (out / "mine.txt").read_text(encoding="utf-8") == "keep"
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new", encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def make_manifest(tmp_path, rows: str):
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "T1_sag.nii.gz").write_bytes(b"x")
    (tmp_path / "c1" / "CT_bone.nii.gz").write_bytes(b"x")
    path = tmp_path / "manifest.csv"
    path.write_text(rows, encoding="utf-8")
    return path


def test_manifest_resolves_relative_paths_and_keeps_clinical_columns(tmp_path):
    path = make_manifest(
        tmp_path, "case_id,label,fold,split,T1_sag,CT_bone,age\nc1,1,3,train,c1/T1_sag.nii.gz,c1/CT_bone.nii.gz,61\n"
    )
    (case,) = read_manifest(path, require=("T1_sag", "CT_bone", "label"))
    assert case.label == 1 and case.fold == 3 and case.split == "train" and case.fields == {"age": "61"}
    assert case.path("T1_sag") == tmp_path / "c1" / "T1_sag.nii.gz"
    with pytest.raises(CSpineInputError, match="case c1.*has no T2_tra"):
        case.path("T2_tra")


def test_manifest_round_trips_through_write(tmp_path):
    path = make_manifest(tmp_path, "case_id,label,fold,split,T1_sag\nc1,0,1,test,c1/T1_sag.nii.gz\n")
    cases = read_manifest(path)
    out = write_manifest(cases, tmp_path / "copy.csv")
    again = read_manifest(out)
    assert again[0].paths == cases[0].paths and again[0].label == 0 and again[0].split == "test"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("case_id,T1_sag\nc1,c1/missing.nii.gz\n", "line 2.*T1_sag file not found.*missing.nii.gz"),
        ("case_id,label\nc1,2\n", "label must be 0 or 1"),
        ("case_id,label\nc1,yes\n", "label 'yes' is not a whole number"),
        ("case_id,T1_sag\nc1,c1/T1_sag.nii.gz\nc1,c1/T1_sag.nii.gz\n", "line 3.*appears twice"),
        ("case_id,T1_sag\nc1,\n", "lacks required column.*CT_bone|case c1 has no CT_bone"),
        ("id,T1_sag\nc1,c1/T1_sag.nii.gz\n", "no case_id column"),
        ("case_id,T1_sag\n", "lists no cases"),
    ],
)
def test_manifest_errors_name_the_line_and_problem(tmp_path, rows, message):
    path = make_manifest(tmp_path, rows)
    with pytest.raises(CSpineInputError, match=message):
        read_manifest(path, require=("CT_bone",) if "CT_bone" in message else ())


def test_missing_manifest_is_reported(tmp_path):
    with pytest.raises(CSpineInputError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def test_case_defaults():
    assert Case("x").paths == {}


def test_outputs_get_ordinary_permissions_not_private_temp_ones(tmp_path):
    mask = os.umask(0o022)
    try:
        file = atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "b.txt").write_text("y", encoding="utf-8")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(file.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
