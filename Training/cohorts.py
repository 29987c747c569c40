"""``python Training/cohorts.py RECIPE --out data``: rebuild the synthetic training data of a shipped model, exactly
(same seeds, same splits), and write the manifest its training command reads (recipes: :data:`RECIPES`).

Each recipe generates its parts with :func:`cspineai.phantom.generate_cohort` (``cspineai phantom``) into
``OUT/<part>/`` and writes ``OUT/<recipe>.csv``:

- ``pain``: the paper-sized cohort (250 coarse cases, seed 2026: its 5 folds and its 50-case test split are the
  figures of the model card) plus 750 more coarse cases (seed 2027) that only ever train (their own test split is
  folded back into training, their folds kept), because 200 training cases were too few for the CPU-trained
  classifier to learn the image findings (docs/results/pain_ablation.md keeps the paper-sized protocol).
- ``pain2500``: ``pain`` plus 1500 more coarse training-only cases (seed 2028); same validation fold and test split.
- ``pain4500``: ``pain2500`` plus 2000 more coarse training-only cases (seed 2029), whose fold 0 joins the validation
  fold; same test split.
- ``cordseg``: 36 + 64 domain-randomised cases (seeds 101, 303) and 12 ordinary ones (seed 202), default protocol;
  each part keeps its own 20% test split (the segmentation benchmark's held-out volumes).
- ``cordseg300``: ``cordseg`` plus 200 domain-randomised training-only cases (seed 505), dealt to folds 1-4 so that
  fold 0 validates on the same 22 cases as ``cordseg`` (its all-slice validation is what a CPU epoch waits for).
- ``cordsegthin``: ``cordseg`` plus 100 domain-randomised and 20 ordinary cases whose sagittal series are 3-D
  volumes of about 1 mm slices (preset ``thin``, seeds 606 and 707), each part with its own folds and 20% test split:
  the geometry of 3-D isotropic acquisitions, which the thick-slice cohort never shows.
- ``cordsegvar``: ``cordsegthin`` plus 120 cases whose cord size and CSF space are drawn independently of the bony
  canal (``--vary-cord``; 40 ordinary and 40 randomised thin-slice cases, 30 randomised and 10 ordinary default ones,
  seeds 808, 909, 1010, 1111), each part with its own folds and test split: in the standard phantom the cord can be
  placed from the bones alone, and cordseg-unet 1.5.0 learned to do so.
- ``cordsegvar_focus``: ``cordsegvar`` without the training cases of ``cordseg``'s standard parts (they keep their
  validation fold 0 and test split): the cohort of the second of the three fine-tuning runs that made cordseg-unet
  1.6.0, which trained on the varied and thin cases only.
- ``registration``: 80 coarse cases (seed 77); the first 60 train (every 10th validates), the last 20 are held out
  (:func:`cspineai.tasks.registration.write_split_manifest`, the benchmark's pairs); plus 120 coarse cases (seed 78)
  that only train (every 10th validates), because 54 training pairs left FPRAN overfitting.
- ``registration500``: ``registration`` plus 300 coarse training-only cases (seed 79), the same 20 held-out pairs.

Parts already generated (their ``manifest.csv`` exists) are reused, so an interrupted run can be started again.
Generation takes ~1.2 s per coarse case and ~2.5 s per default case per worker on a 2-core CPU.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

try:
    import cspineai  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Logic"))

from cspineai.manifest import read_manifest, write_manifest  # noqa: E402
from cspineai.phantom import generate_cohort  # noqa: E402
from cspineai.tasks.registration import split_registration  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Part:
    folder: str
    n: int
    seed: int
    resolution: str = "default"
    randomize: bool = False
    train_only: bool = False
    pairs: bool = False  # registration pairs: split by case order, not by label (see write_split_manifest)
    not_in_fold: int | None = None  # deal the part's cases round-robin to the other folds (training only in that fold)
    vary_cord: bool = False  # cord size and CSF space independent of the bony canal
    only_fold: int | None = None  # keep only this fold and the test split: the part validates and tests, never trains


# Each larger recipe is a smaller one plus parts, so the shared parts (and their folds) stay identical.
_PAIN = (Part("pain250", 250, 2026, "coarse"), Part("pain750x", 750, 2027, "coarse", train_only=True))
_PAIN2500 = _PAIN + (Part("pain1500y", 1500, 2028, "coarse", train_only=True),)
_CORDSEG = (Part("cordseg_dr", 36, 101, randomize=True), Part("cordseg_plain", 12, 202),
            Part("cordseg_dr2", 64, 303, randomize=True))
_CORDSEGTHIN = _CORDSEG + (Part("cordseg_thin_dr", 100, 606, "thin", randomize=True),
                           Part("cordseg_thin_plain", 20, 707, "thin"))
_CORDSEGVAR = _CORDSEGTHIN + (Part("cordseg_var_thin_plain", 40, 808, "thin", vary_cord=True),
                             Part("cordseg_var_thin_dr", 40, 909, "thin", randomize=True, vary_cord=True),
                             Part("cordseg_var_dr", 30, 1010, randomize=True, vary_cord=True),
                             Part("cordseg_var_plain", 10, 1111, vary_cord=True))
_REGISTRATION = (Part("regcohort", 80, 77, "coarse", pairs=True),
                 Part("regcohort2", 120, 78, "coarse", train_only=True, pairs=True))

RECIPES = {
    "pain": _PAIN,
    "pain2500": _PAIN2500,
    "pain4500": _PAIN2500 + (Part("pain2000z", 2000, 2029, "coarse", train_only=True),),
    "cordseg": _CORDSEG,
    "cordseg300": _CORDSEG + (Part("cordseg_dr3", 200, 505, randomize=True, train_only=True, not_in_fold=0),),
    "cordsegthin": _CORDSEGTHIN,
    "cordsegvar": _CORDSEGVAR,
    "cordsegvar_focus": tuple(dataclasses.replace(p, only_fold=0) for p in _CORDSEG) + _CORDSEGVAR[len(_CORDSEG):],
    "registration": _REGISTRATION,
    "registration500": _REGISTRATION + (Part("regcohort3", 300, 79, "coarse", train_only=True, pairs=True),),
}


def build(recipe: str, out: Path, workers: int) -> Path:
    cases = []
    for part in RECIPES[recipe]:
        manifest = out / part.folder / "manifest.csv"
        if not manifest.exists():
            generate_cohort(part.n, out / part.folder, seed=part.seed, randomize=part.randomize, workers=workers,
                            resolution=part.resolution, vary_cord=part.vary_cord)
        part_cases = read_manifest(manifest)
        if part.only_fold is not None:
            part_cases = [c for c in part_cases if c.split == "test" or c.fold == part.only_fold]
        if part.pairs:
            split_registration(part_cases, n_train=len(part_cases) if part.train_only else 60)
        elif part.train_only:
            folds = sorted({c.fold for c in part_cases if c.fold is not None} - {part.not_in_fold})
            for n, case in enumerate(part_cases):
                case.split = "train"
                if part.not_in_fold is not None:
                    case.fold = folds[n % len(folds)]
        cases += part_cases
    return write_manifest(cases, out / f"{recipe}.csv")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--out", default="data", help="folder for the parts and the manifest (default: data)")
    parser.add_argument("--workers", type=int, default=2, help="parallel generator processes")
    args = parser.parse_known_args(argv)[0]
    target = build(args.recipe, Path(args.out), args.workers)
    cases = read_manifest(target, check_files=False)
    print(f"{target}: {len(cases)} cases, {sum(c.split == 'test' for c in cases)} held out (split=test)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
