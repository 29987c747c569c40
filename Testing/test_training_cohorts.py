"""Training/cohorts.py: the recipes that rebuild the shipped models' synthetic training data."""

from __future__ import annotations

from pathlib import Path

from cspineai.manifest import read_manifest
from helpers import load_script

REPO = Path(__file__).resolve().parents[1]


def _cohorts():
    return load_script("Training/cohorts.py")


def test_recipe_keeps_the_paper_split_and_folds_extra_cases_into_training(tmp_path, monkeypatch):
    cohorts = _cohorts()
    monkeypatch.setitem(cohorts.RECIPES, "tiny", (cohorts.Part("base", 5, 11, "coarse"),
                                                  cohorts.Part("extra", 5, 12, "coarse", train_only=True)))
    target = cohorts.build("tiny", tmp_path, workers=1)
    cases = read_manifest(target)
    base = read_manifest(tmp_path / "base" / "manifest.csv")
    extra = read_manifest(tmp_path / "extra" / "manifest.csv")
    assert [c.case_id for c in cases] == [c.case_id for c in base + extra]
    assert [c.split for c in cases[:5]] == [c.split for c in base] and "test" in {c.split for c in base}
    assert {c.split for c in cases[5:]} == {"train"} and "test" in {c.split for c in extra}
    assert [c.fold for c in cases[5:]] == [c.fold for c in extra]
    # A second build reuses the generated parts (nothing is generated again).
    stamp = (tmp_path / "extra" / "manifest.csv").stat().st_mtime_ns
    cohorts.build("tiny", tmp_path, workers=1)
    assert (tmp_path / "extra" / "manifest.csv").stat().st_mtime_ns == stamp


def test_a_part_kept_out_of_the_validation_fold_only_trains_there(tmp_path, monkeypatch):
    cohorts = _cohorts()
    monkeypatch.setitem(cohorts.RECIPES, "tiny", (cohorts.Part("base", 5, 11, "coarse"),
                                                  cohorts.Part("extra", 6, 12, "coarse", train_only=True,
                                                               not_in_fold=0)))
    cases = read_manifest(cohorts.build("tiny", tmp_path, workers=1))
    base = read_manifest(tmp_path / "base" / "manifest.csv")
    assert [c.fold for c in cases[:5]] == [c.fold for c in base]
    extra_folds = [c.fold for c in cases[5:]]
    assert 0 not in extra_folds and len(set(extra_folds)) > 1  # dealt round-robin to the other folds
    assert {c.split for c in cases[5:]} == {"train"}


def test_a_part_kept_to_one_fold_only_validates_and_tests(tmp_path, monkeypatch):
    cohorts = _cohorts()
    monkeypatch.setitem(cohorts.RECIPES, "tiny", (cohorts.Part("base", 10, 11, "coarse", only_fold=0),))
    cases = read_manifest(cohorts.build("tiny", tmp_path, workers=1))
    generated = read_manifest(tmp_path / "base" / "manifest.csv")
    kept = [c.case_id for c in generated if c.split == "test" or c.fold == 0]
    assert [c.case_id for c in cases] == kept and len(kept) < len(generated)
    assert cohorts.RECIPES["cordsegvar_focus"][3:] == cohorts.RECIPES["cordsegvar"][3:]  # all but the standard parts


def test_the_shipped_recipes_name_the_seeds_of_the_model_cards():
    cohorts = _cohorts()
    cards = "".join(p.read_text(encoding="utf-8") for p in (REPO / "Logic/cspineai/models").glob("*.md"))
    for recipe in ("pain2500", "cordseg", "registration500"):
        assert f"cohorts.py {recipe}" in cards, recipe
        for part in cohorts.RECIPES[recipe]:
            assert f"seed {part.seed}" in cards or f"--seed {part.seed}" in cards, (recipe, part)
