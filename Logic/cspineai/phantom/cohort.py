"""Writing cases and cohorts: one folder per case plus ``manifest.csv`` (format in ``docs/data.md``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..io import write_volume
from ..manifest import Case, write_manifest
from ..series import SERIES
from ..volume import Volume

#: Clinical covariates copied into the manifest (one column each).
CLINICAL_COLUMNS = ("age", "sex", "bmi", "vas_neck_preop", "joa", "symptom_months", "smoking")
N_FOLDS = 5
TEST_FRACTION = 0.2  # the paper's 200/50 split of 250 patients


def case_seed(cohort_seed: int, index: int) -> int:
    """Seed of case ``index`` of a cohort: independent of the cohort size, so cohorts of different N share cases."""
    return int(np.random.SeedSequence([int(cohort_seed), int(index)]).generate_state(1)[0])


def write_case(case, folder: str | os.PathLike) -> dict[str, Path]:
    """Write one :class:`~cspineai.phantom.PhantomCase` into ``folder``; returns manifest column -> file.

    Files: ``<series>.nii.gz``, ``<series>_labels.nii.gz``, ``causal_mask_<series>.nii.gz`` for the five series,
    ``displacement.nii.gz`` (3-vector image on the T1_sag grid, LPS mm), ``landmarks.json``, ``clinical.json``
    (covariates, label, pain probability, findings, protocol, pose), ``radiograph.nii.gz`` (2-D lateral DRR).
    """
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in SERIES:
        paths[name] = write_volume(case.series[name], folder / f"{name}.nii.gz")
        paths[f"{name}_labels"] = write_volume(case.labels[name], folder / f"{name}_labels.nii.gz")
        write_volume(case.causal_mask[name], folder / f"causal_mask_{name}.nii.gz")
    paths["causal_mask"] = folder / "causal_mask_T1_sag.nii.gz"
    reference = case.series["T1_sag"]
    field = sitk.GetImageFromArray(np.ascontiguousarray(case.displacement, dtype=np.float64), isVector=True)
    field.SetSpacing(reference.spacing)
    field.SetOrigin(reference.origin)
    field.SetDirection(tuple(reference.direction.ravel()))
    with atomic_path(folder / "displacement.nii.gz") as tmp:
        sitk.WriteImage(sitk.Cast(field, sitk.sitkVectorFloat32), str(tmp), useCompression=True)
    paths["displacement"] = folder / "displacement.nii.gz"
    paths["landmarks"] = atomic_write_text(folder / "landmarks.json", json.dumps(case.landmarks, indent=1))
    clinical = {
        **case.clinical, "label": case.label, "pain_probability": round(case.probability, 6), "seed": case.seed,
        "findings": case.findings, "protocol": case.protocol, "pose": case.pose,
    }
    paths["clinical"] = atomic_write_text(folder / "clinical.json", json.dumps(clinical, indent=1, default=_json))
    if case.radiograph is not None:
        image = sitk.GetImageFromArray(case.radiograph.astype(np.float32))
        image.SetSpacing(tuple(float(s) for s in case.radiograph_spacing))
        with atomic_path(folder / "radiograph.nii.gz") as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        paths["radiograph"] = folder / "radiograph.nii.gz"
    return paths


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def read_displacement(path: str | os.PathLike) -> tuple[np.ndarray, Volume]:
    """Read ``displacement.nii.gz``: the field ``(K, J, I, 3)`` float32 (LPS mm) and its grid as an empty Volume."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    grid = Volume(np.zeros(array.shape[:3], dtype=np.uint8), image.GetSpacing(), image.GetOrigin(),
                  np.array(image.GetDirection()).reshape(3, 3), "displacement", str(path))
    return array, grid


def stratified_assignment(labels: list[int], seed: int) -> tuple[list[int], list[str]]:
    """Five folds and a 20% test split, each stratified by label (patient-level: one case is one patient)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
    labels = np.asarray(labels)
    folds = np.zeros(len(labels), dtype=int)
    split = np.array(["train"] * len(labels), dtype=object)
    for value in (0, 1):
        idx = np.nonzero(labels == value)[0]
        idx = idx[rng.permutation(len(idx))]
        folds[idx] = np.arange(len(idx)) % N_FOLDS
    n_test = int(round(TEST_FRACTION * len(labels)))
    positives = np.nonzero(labels == 1)[0]
    negatives = np.nonzero(labels == 0)[0]
    n_test_pos = int(round(n_test * len(positives) / max(1, len(labels))))
    test = np.concatenate([rng.permutation(positives)[:n_test_pos], rng.permutation(negatives)[: n_test - n_test_pos]])
    split[test] = "test"
    return folds.tolist(), split.tolist()


def _make_one(args: tuple) -> tuple[str, dict, int, dict]:
    index, seed, folder, randomize, resolution, threads, vary_cord = args
    from .generator import generate_case

    case = generate_case(seed, randomize=randomize, resolution=resolution, threads=threads, vary_cord=vary_cord)
    paths = write_case(case, folder)
    return folder.name, {k: str(v) for k, v in paths.items()}, case.label, case.clinical


def generate_cohort(n: int, out_dir: str | os.PathLike, seed: int, randomize: bool = False, workers: int = 1,
                    resolution: str = "default", progress: Callable[[int, int], None] | None = None,
                    vary_cord: bool = False) -> Path:
    """Generate ``n`` cases into ``out_dir`` (one folder each) and write ``out_dir/manifest.csv``; return its path.

    Case ``i`` uses seed :func:`case_seed` ``(seed, i)`` and is named ``phantom_<seed>_<i:04d>``. ``workers`` > 1
    generates cases in parallel processes; ``randomize``, ``resolution`` and ``vary_cord`` are those of
    :func:`~cspineai.phantom.generator.generate_case`. The manifest lists every series, its label map, the
    displacement field, landmarks, clinical JSON, the causal mask on the T1_sag grid (the other grids' masks lie
    beside it as ``causal_mask_<series>.nii.gz``), the radiograph and the clinical covariates.
    """
    from ..errors import CSpineInputError

    if n < 1:
        raise CSpineInputError("phantom", f"the number of cases must be at least 1, not {n}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = 1 if workers > 1 else 2  # parallel processes already fill the cores
    jobs = [(i, case_seed(seed, i), out_dir / f"phantom_{seed}_{i:04d}", randomize, resolution, threads, vary_cord)
            for i in range(n)]
    results = []
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            for done, result in enumerate(pool.map(_make_one, jobs), start=1):
                results.append(result)
                if progress:
                    progress(done, n)
    else:
        for done, job in enumerate(jobs, start=1):
            results.append(_make_one(job))
            if progress:
                progress(done, n)
    folds, split = stratified_assignment([r[2] for r in results], seed)
    cases = []
    for (name, paths, label, clinical), fold, part in zip(results, folds, split, strict=True):
        fields = {column: str(clinical[column]) for column in CLINICAL_COLUMNS}
        if "radiograph" in paths:
            fields["radiograph"] = os.path.relpath(paths.pop("radiograph"), out_dir)
        cases.append(Case(case_id=name, label=label, fold=fold, split=part,
                          paths={k: Path(v) for k, v in paths.items()}, fields=fields))
    return write_manifest(cases, out_dir / "manifest.csv", extra_columns=(*CLINICAL_COLUMNS, "radiograph"))
