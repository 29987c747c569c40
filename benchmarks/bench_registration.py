"""CT -> MRI registration on held-out synthetic pairs: header alignment, the B-spline baseline and FPRAN (NCC, MIND).

For every held-out case (``split == test`` of the registration manifest; the cohort generator knows the truth) and
every method this runs :func:`cspineai.registration.register` on the axial ``CT_bone`` (moving) and the sagittal
``T1_sag`` (fixed), then measures (the first row scores the generator's own displacement the same way: the ceiling
that resampling the label maps leaves):

- vertebra Dice: the CT's vertebra labels (body + posterior elements, C2..T1) warped through the result onto the MRI
  grid (nearest neighbour) against the MRI's, mean over the levels present;
- landmark error: the 13 vertebral-body centroids and disc centres of the MRI mapped by the result (``x + d(x)``)
  against their true CT positions; mean and 95th percentile over all landmarks of all cases (mm);
- % of MRI voxels with Jacobian determinant <= 0, and the SD of the log-Jacobian (means over cases);
- seconds per pair of the registration itself (``RegistrationResult.seconds``; excludes reading files and the figures).

and writes the Markdown table (command, machine, cohort, n) to ``docs/results/registration.md``.

    .venv/bin/python benchmarks/bench_registration.py --manifest data/registration.csv \
        --model fpran-ncc=runs/registration-ncc/checkpoints/best.pt \
        --model fpran-mind=runs/registration-mind/checkpoints/best.pt [--threads 2]

``--model`` takes a training checkpoint or a registry id (``id@version`` for an older one). Timings depend on the
machine's load (printed with them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from cspineai.environment import machine_summary

REPO = Path(__file__).resolve().parents[1]


def load_pair(case) -> dict:
    """CT, MRI, their label maps and the true landmarks (MRI and CT positions, LPS mm) of a manifest case."""
    from cspineai.io import read_volume
    from cspineai.tasks.registration import read_landmarks

    mri_points, ct_points = read_landmarks(case.path("landmarks"))
    volumes = {key: read_volume(case.path(column)) for key, column in
               (("ct", "CT_bone"), ("mri", "T1_sag"), ("ct_labels", "CT_bone_labels"), ("mri_labels", "T1_sag_labels"))}
    return {"case_id": case.case_id, **volumes, "mri_points": mri_points, "ct_points": ct_points}


def truth_result(case, mri):
    """The generator's own MRI -> CT displacement as a RegistrationResult: the ceiling of every figure.

    Its vertebra Dice is below 1 because both label maps are rasterised on their own grids (CT 1 x 1 x 3 mm, MRI
    slices 3.5 mm thick) and the warped CT labels are resampled once more by nearest neighbour.
    """
    from cspineai.geometry import lps_to_ras, same_grid
    from cspineai.metrics.registration import jacobian_figures
    from cspineai.phantom.cohort import read_displacement
    from cspineai.registration import RegistrationResult

    field, grid = read_displacement(case.path("displacement"))
    if not same_grid(grid, mri):
        raise ValueError(f"{case.case_id}: the displacement field is not on the T1_sag grid")
    figures = jacobian_figures(field, mri.spacing, mri.direction)
    return RegistrationResult(displacement_ras=lps_to_ras(field).astype(np.float32), reference=mri, warped_ct=None,
                              seconds=0.0, method="truth", **figures)


def evaluate(result, pair: dict) -> dict:
    """Vertebra Dice, landmark errors (array, mm), folding %, SD log-Jacobian and seconds of one result."""
    from cspineai.geometry import resample_like
    from cspineai.metrics.registration import landmark_errors, warped_label_dice
    from cspineai.tasks.registration import N_VERTEBRAE, vertebra_map

    ct_vertebrae = pair["ct_labels"].with_array(vertebra_map(pair["ct_labels"].array))
    transform = None if result.method == "identity" else result.to_sitk_transform()
    warped = resample_like(ct_vertebrae, pair["mri"], "nearest", transform=transform)
    dice = warped_label_dice(warped.array, vertebra_map(pair["mri_labels"].array), labels=range(1, N_VERTEBRAE + 1))
    errors = landmark_errors(result.map_points(pair["mri_points"]), pair["ct_points"])
    return {"dice": dice, "errors": errors, "folding": result.folding_percent, "sd_log_j": result.sd_log_jacobian,
            "seconds": result.seconds}


def load_fpran(spec: str):
    """A RegistrationNet from a training checkpoint (a path) or a registry id (``id`` or ``id@version``)."""
    if Path(spec).is_file():
        from cspineai.training.checkpoint import load_checkpoint, model_weights
        from cspineai.training.config import resolve_config
        from cspineai.training.tasks import get_task

        state = load_checkpoint(spec)
        config = resolve_config(dict(state["config"]), spec)
        model = get_task(config["task"]).build_model(config)
        model.load_state_dict(model_weights(state))
        return model.eval()
    from cspineai.models.registry import load_model

    return load_model(spec)[0]


def summarise(rows: list[dict]) -> dict:
    errors = np.concatenate([r["errors"] for r in rows])
    return {"n": len(rows), "dice": float(np.mean([r["dice"] for r in rows])), "mean_mm": float(errors.mean()),
            "p95_mm": float(np.percentile(errors, 95)), "folding": float(np.mean([r["folding"] for r in rows])),
            "max_folding": float(np.max([r["folding"] for r in rows])),
            "sd_log_j": float(np.mean([r["sd_log_j"] for r in rows])),
            "seconds": float(np.mean([r["seconds"] for r in rows]))}


def table(summaries: dict[str, dict]) -> str:
    lines = ["| method | vertebra Dice | landmark mean (mm) | landmark p95 (mm) | % det J <= 0 (mean / max) "
             "| SD log J | s / pair |", "|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        lines.append(f"| {name} | {s['dice']:.3f} | {s['mean_mm']:.2f} | {s['p95_mm']:.2f} | "
                     f"{s['folding']:.3f} / {s['max_folding']:.3f} | {s['sd_log_j']:.3f} | {s['seconds']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=str(REPO / "data" / "regcohort" / "registration.csv"))
    parser.add_argument("--split", default="test", help="manifest split to score (held-out cases)")
    parser.add_argument("--n", type=int, default=20, help="number of held-out cases (first n)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT_OR_ID",
                        help="an FPRAN to score (repeatable)")
    parser.add_argument("--no-bspline", action="store_true", help="skip the classical baseline")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "registration.md"))
    args = parser.parse_args(argv)

    import SimpleITK as sitk
    import torch

    from cspineai.atomic import atomic_write_text
    from cspineai.manifest import read_manifest
    from cspineai.registration import register

    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    cases = [c for c in read_manifest(args.manifest) if c.split == args.split][: args.n]
    if not cases:
        print(f"no {args.split} cases in {args.manifest}", file=sys.stderr)
        return 1
    methods: dict[str, dict] = {"truth (generator's displacement)": {"method": "truth"},
                                "identity (headers)": {"method": "identity"}}
    if not args.no_bspline:
        methods["B-spline baseline (masked MI)"] = {"method": "bspline"}
    for spec in args.model:
        name, _, source = spec.partition("=")
        methods[name] = {"method": "fpran", "model": load_fpran(source)}

    rows: dict[str, list[dict]] = {name: [] for name in methods}
    start = time.time()
    for n, case in enumerate(cases, start=1):
        pair = load_pair(case)
        for name, kwargs in methods.items():
            result = (truth_result(case, pair["mri"]) if kwargs["method"] == "truth"
                      else register(pair["ct"], pair["mri"], **kwargs))
            rows[name].append(evaluate(result, pair))
        print(f"{n}/{len(cases)} {case.case_id} "
              + " ".join(f"{name}: {rows[name][-1]['errors'].mean():.2f} mm {rows[name][-1]['dice']:.3f}"
                         for name in methods), flush=True)
    summaries = {name: summarise(r) for name, r in rows.items()}
    text = table(summaries)
    command = "python benchmarks/bench_registration.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = f"""# CT -> MRI registration on held-out synthetic pairs

Produced by `{command}` ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {time.time() - start:.0f} s in all).

- Machine: {machine_summary()}. The machine was shared with other jobs: timings are indicative.
- Cohort: `{args.manifest}` (`python Training/cohorts.py registration`; its test pairs are cases 60-79 of
  `cspineai phantom --n 80 --seed 77 --resolution coarse`, the fixed generator: CT and
  MRI in one patient frame), `split == {args.split}`: n = {len(cases)} pairs never seen in training
  ({cases[0].case_id} .. {cases[-1].case_id}). Moving: axial `CT_bone` (1 x 1 x 3 mm); fixed: sagittal `T1_sag`
  (1 x 1 x 3.5 mm, 13 slices).
- Vertebra Dice: CT vertebra labels (body + posterior elements, C2..T1) warped by nearest neighbour onto the MRI grid,
  mean over levels, mean over pairs. Landmarks: 7 vertebral-body centroids + 6 disc centres per pair, pooled
  ({sum(r['errors'].size for r in next(iter(rows.values())))} distances per method). Folding and SD log-Jacobian on
  the MRI grid (mean over pairs; the folding's maximum pair too). Seconds: the registration call only.

{text}

Methods compared (all start from the header alignment, the CT's and MRI's position headers in one patient frame):

- truth: the generator's exact MRI -> CT displacement (written with each case), warped and scored like the others:
  the ceiling of the figures on these grids (its vertebra Dice is below 1 because both label maps are rasterised on
  their own grids and resampled once more by nearest neighbour).
- identity: the headers alone (zero displacement).
- B-spline baseline (`cspineai.registration.register_bspline`, SimpleITK): Mattes MI (32 bins) restricted to the spine,
  CT mask = bone (> 200 HU) dilated 4 mm, MRI mask = that bone carried onto the MRI by the headers and dilated 15 mm
  (whole-field MI aligned the skin outline and soft tissue, which move differently from the flexed spine, and made
  the spine worse than the headers); a translation search (superior-inferior +-20 mm, anterior-posterior +-10 mm,
  5 mm steps) on 4 mm copies; rigid (Euler, regular-step gradient descent, shrink 4-2); cubic B-spline (50 mm mesh,
  L-BFGS-B, 20 iterations, half resolution). Bounded iteration counts; ITK threads as stated above.
- FPRAN: `cspineai.nn.fpran.RegistrationNet` at its training spacing, trained by `cspineai.tasks.registration`
  (Training/configs/registration.yaml) on the manifest's training cases (each model's card says which); similarity
  as named.
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, report)
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
