"""Cord segmentation: Dice / HD95 of SAttisUNet and its baselines on synthetic test cases and the shared real scan.

For every model given (a training checkpoint or a registry id, labelled ``name=spec``) this runs the full inference of
:func:`cspineai.segmentation.segment_cord` (working grid, sliding window, resampling back, clean-up) on:

- the MRI series (T1_sag, T2_sag, T2_tra) of the manifest's ``split == test`` cases: Dice and HD95 (mm) of cord, CSF and
  vertebral bodies (all levels pooled) against the phantom's label maps;
- the real T1 scan with its manual cord mask (``../shared/data/real/sct_t1w``, never seen in training): cord Dice, HD95;
- a 320 x 320 x 20 sagittal T2 of a synthetic neck (:func:`speed_volume`): seconds per volume (target under 5 s on
  2 CPU cores);
- with ``--crop-mm LR AP SI``, the same synthetic volumes again, each cropped to that box around its cord
  (:func:`crop_around_cord`): real cord scans are often acquired that small, the phantoms show the whole neck.

- with ``--csa``, the error of the mean angle-corrected cord CSA (:func:`cspineai.morphometry.measure_cord`) of each
  segmentation against that of the reference mask, in percent (signed: the bias; and absolute), the figure the
  morphometry table inherits;

and writes the table to ``docs/results/segmentation.md``. ``--validation-fold N`` scores the manifest's fold-N
cases outside the test split instead (the validation fold of a run trained with ``data.fold: N``), to choose between
models without touching the held-out cases or the real scan (skipped then); write that table elsewhere with ``--out``.

    .venv/bin/python benchmarks/bench_segmentation.py --model sattisunet=runs/cordseg-sattisunet/checkpoints/best.pt \
        [--model unet=runs/cordseg-unet/checkpoints/best.pt] --manifest data/cordseg.csv [--threads 2]

Timings depend on the machine's load (printed with the results).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from cspineai.environment import machine_summary
from cspineai.series import MRI_SERIES

REPO = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("CSPINEAI_SHARED_DATA", REPO.parent / "shared" / "data")) / "real" / "sct_t1w"


def load(spec: str):
    """``(network, SegmentationConfig)`` from a checkpoint path or a registry id."""
    from cspineai.segmentation import load_segmentation_model
    from cspineai.training.checkpoint import load_checkpoint, model_weights
    from cspineai.training.config import resolve_config
    from cspineai.training.tasks import get_task

    if not Path(spec).is_file():
        return load_segmentation_model(spec)
    state = load_checkpoint(spec)
    config = resolve_config(dict(state["config"]), spec)
    task = get_task("cordseg")
    network = task.build_model(config)
    network.load_state_dict(model_weights(state))
    return network.eval(), task.segmentation_config(config)


def score(pred, ref, spacing, values) -> tuple[float, float]:
    from cspineai.metrics.segmentation import dice_scores, hd95_scores

    p, r = np.isin(pred, values).astype(np.uint8), np.isin(ref, values).astype(np.uint8)
    return dice_scores(p, r, [1])[1], hd95_scores(p, r, spacing, [1])[1]


def csa_error_pct(pred, ref) -> float:
    """Error (%) of the mean cord CSA of label map ``pred`` against that of ``ref`` (cord = 1; Volumes on one grid)."""
    import logging

    from cspineai.morphometry import measure_cord

    # measure_cord warns for every slice whose cord is in two parts; the error figure is what counts here
    logging.getLogger("cspineai.morphometry").setLevel(logging.ERROR)
    truth = measure_cord(ref.with_array((ref.array == 1).astype(np.uint8))).summary["csa_mean_mm2"]
    estimate = measure_cord(pred.with_array((pred.array == 1).astype(np.uint8))).summary["csa_mean_mm2"]
    return 100.0 * (estimate - truth) / truth


def crop_around_cord(mri, labels, size_mm):
    """``mri`` and its ``labels`` cropped (no resampling) to an LPS box of ``size_mm`` (LR, AP, SI) centred on the cord,
    the field of view of a cord-focused acquisition such as the shared real T1 (42 x 76 x 77 mm)."""
    from cspineai.geometry import crop_to_box, index_to_world
    from cspineai.series import CORD

    centre = index_to_world(labels, np.argwhere(labels.array == CORD)[:, ::-1].mean(axis=0))
    half = np.asarray(size_mm, dtype=float) / 2.0
    return crop_to_box(mri, centre - half, centre + half), crop_to_box(labels, centre - half, centre + half)


def synthetic_rows(name, network, config, manifests, max_cases: int = 0, fold: int | None = None,
                   crop_mm: tuple[float, float, float] | None = None,
                   csa: bool = False) -> tuple[list[dict], list[dict]]:
    """Rows of the whole synthetic volumes of one or more ``manifests`` (their cases pooled) and (with ``crop_mm``) of
    the same volumes cropped around the cord, each volume read once; with ``csa`` each row has ``csa_error_pct``
    (:func:`csa_error_pct`)."""
    from cspineai.io import read_volume
    from cspineai.manifest import read_manifest
    from cspineai.segmentation import segment_cord
    from cspineai.series import BODY_VALUES, CORD, CSF

    def scored(mri, labels, data: str, case_name: str) -> dict:
        ref = labels.array
        start = time.perf_counter()
        try:
            segmentation = segment_cord(mri, network, config)
            pred = segmentation.array
        except Exception as error:  # a failed case counts as Dice 0 (and has no CSA error), and is reported
            print(f"  {name} {case_name}: {error}")
            segmentation, pred = None, np.zeros_like(ref)
        row = {"model": name, "data": data, "case": case_name, "seconds": time.perf_counter() - start}
        for label, values in (("cord", [CORD]), ("csf", [CSF]), ("bodies", list(BODY_VALUES.values()))):
            row[f"{label}_dice"], row[f"{label}_hd95"] = score(pred, ref, mri.spacing, values)
        if csa and segmentation is not None:
            row["csa_error_pct"] = csa_error_pct(segmentation, labels)
        return row

    whole, cropped = [], []
    manifests = [manifests] if isinstance(manifests, (str, Path)) else manifests
    cases = [c for manifest in manifests for c in read_manifest(manifest)
             if (c.split == "test" if fold is None else c.split != "test" and c.fold == fold)]
    data = "synthetic" if fold is None else f"synthetic validation (fold {fold})"
    data_cropped = f"{data}, cropped to {' x '.join(f'{v:g}' for v in crop_mm)} mm around the cord" if crop_mm else ""
    for case in cases[:max_cases] if max_cases else cases:
        for series in MRI_SERIES:
            if series not in case.paths or f"{series}_labels" not in case.paths:
                continue
            mri = read_volume(case.paths[series], modality=series)
            labels = read_volume(case.paths[f"{series}_labels"], allow_constant=True)
            case_name = f"{case.case_id}/{series}"
            whole.append(scored(mri, labels, data, case_name))
            if crop_mm:
                cropped.append(scored(*crop_around_cord(mri, labels, crop_mm), data_cropped, case_name))
    return whole, cropped


def real_row(name, network, config, csa: bool = False) -> dict | None:
    from cspineai.io import read_volume
    from cspineai.segmentation import segment_cord
    from cspineai.series import CORD

    if not (REAL / "t1w.nii.gz").is_file():
        return None
    mri = read_volume(REAL / "t1w.nii.gz", modality="T1_sag")
    manual = read_volume(REAL / "t1w_seg-manual.nii.gz", allow_constant=True).array
    start = time.perf_counter()
    try:
        segmentation = segment_cord(mri, network, config)
        pred = segmentation.array
    except Exception as error:
        print(f"  {name} real scan: {error}")
        segmentation, pred = None, np.zeros_like(manual)
    seconds = time.perf_counter() - start
    dice, hd95 = score(pred, manual, mri.spacing, [CORD])
    row = {"model": name, "data": "real T1 (SCT testing data)", "case": "t1w", "seconds": seconds,
           "cord_dice": dice, "cord_hd95": hd95}
    if csa and segmentation is not None:
        row["csa_error_pct"] = csa_error_pct(segmentation, mri.with_array((manual > 0).astype(np.uint8)))
    return row


def speed_volume():
    """A 320 x 320 x 20 sagittal T2 of a synthetic neck (phantom seed 4242's T2_sag resampled over the same field of
    view), so that the timing covers the whole of ``segment_cord``, level assignment included."""
    from cspineai.geometry import resample_to_spacing
    from cspineai.phantom import generate_case

    t2 = generate_case(4242).series["T2_sag"]
    extent = np.array(t2.size_ijk) * np.array(t2.spacing)
    volume = resample_to_spacing(t2, tuple(extent / np.array([320, 320, 20])))
    assert volume.shape == (20, 320, 320), volume.shape
    return volume


def speed(network, config, repeats: int, volume=None) -> tuple[float, bool]:
    """Median seconds of ``segment_cord`` on :func:`speed_volume` (after one warm-up run), and whether it found the
    cord: a model that finds none is timed up to that check (the clean-up and level assignment are then skipped)."""
    from cspineai.errors import CSpineInputError
    from cspineai.segmentation import segment_cord

    volume = speed_volume() if volume is None else volume
    found = True

    def run():
        nonlocal found
        try:
            segment_cord(volume, network, config)
        except CSpineInputError:
            found = False

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), found


def _mean(rows, key) -> str:
    values = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return f"{np.mean(values):.3f}" if values else "n/a"


def series_line(name: str, rows: list[dict]) -> str:
    """Mean cord Dice per MRI series (``row["case"]`` is ``case_id/series``), one Markdown table row."""
    cells = [_mean([r for r in rows if r["case"].endswith(f"/{series}")], "cord_dice") for series in MRI_SERIES]
    return f"| {name} | {rows[0]['data']} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="name=checkpoint.pt or name=registry-id")
    parser.add_argument("--manifest", action="append",
                        help="cohort with split=test cases and <series>_labels columns (repeat to pool several)")
    parser.add_argument("--max-cases", type=int, default=0, help="first N test cases only (0: all)")
    parser.add_argument("--validation-fold", type=int, default=None,
                        help="score this fold's non-test cases instead of the test split (and skip the real scan)")
    parser.add_argument("--crop-mm", type=float, nargs=3, metavar=("LR", "AP", "SI"),
                        help="also score every synthetic volume cropped to this box (mm) around its cord, the field "
                             "of view of cord-focused real scans (the shared T1: 42 76 77)")
    parser.add_argument("--intensity-weight", type=float, default=None,
                        help="cord-versus-CSF intensity refinement weight for every model (0: off; default: each "
                             "model's own, SegmentationConfig.intensity_weight)")
    parser.add_argument("--csa", action="store_true",
                        help="also the error of each segmentation's mean cord CSA against the reference's (slower)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "segmentation.md"))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    print(machine_summary())
    lines = ["| model | data | volumes | cord Dice | cord HD95 (mm) | CSF Dice | bodies Dice | s / volume |",
             "|---|---|---|---|---|---|---|---|"]
    series_lines, csa_lines = [], []
    speed_lines = []
    timed = speed_volume()
    for spec in args.model:
        name, _, path = spec.partition("=")
        network, config = load(path or name)
        if args.intensity_weight is not None:
            config = dataclasses.replace(config, intensity_weight=args.intensity_weight)
        synthetic, cropped = (synthetic_rows(name, network, config, args.manifest, args.max_cases,
                                             args.validation_fold, args.crop_mm, args.csa)
                               if args.manifest else ([], []))
        real = real_row(name, network, config, args.csa) if args.validation_fold is None else None
        for rows in (synthetic, cropped, [real] if real else []):
            if not rows:
                continue
            line = (f"| {name} | {rows[0]['data']} | {len(rows)} | {_mean(rows, 'cord_dice')} | "
                    f"{_mean(rows, 'cord_hd95')} | {_mean(rows, 'csf_dice')} | {_mean(rows, 'bodies_dice')} | "
                    f"{_mean(rows, 'seconds')} |")
            print(line)
            lines.append(line)
        for rows in (synthetic, cropped):
            if rows:
                series_lines.append(series_line(name, rows))
                print(series_lines[-1])
        for rows in (synthetic, cropped, [real] if real else []) if args.csa else ():
            errors = np.array([r["csa_error_pct"] for r in rows if "csa_error_pct" in r])
            if rows and errors.size:
                csa_lines.append(f"| {name} | {rows[0]['data']} | {errors.size} | {errors.mean():+.1f} | "
                                 f"{np.abs(errors).mean():.1f} |")
                print(csa_lines[-1])
        seconds, found = speed(network, config, args.repeats, timed)
        note = "" if found else " (no cord found: timed up to that check)"
        speed_lines.append(f"| {name} | {seconds:.2f}{note} |")
        print(f"{name}: {seconds:.2f} s for a 320x320x20 sagittal volume{note}")

    from cspineai.atomic import atomic_write_text

    series_table = [
        "Cord Dice by series (the same synthetic volumes; a user can see which series to give the model):", "",
        "| model | data | " + " | ".join(MRI_SERIES) + " |", "|---|---|" + "---|" * len(MRI_SERIES), *series_lines, "",
    ] if series_lines else []

    text = "\n".join([
        "# Cord segmentation results", "",
        f"Produced by `python benchmarks/bench_segmentation.py {shlex.join(argv)}`", "",
        f"on: {machine_summary()}.", "",
        "Dice and HD95 of the full inference (`cspineai.segmentation.segment_cord`) against the phantom's label maps",
        ("(synthetic test split) and the manual cord mask of the real T1 scan (never seen in training)."
         if args.validation_fold is None else f"(validation fold {args.validation_fold}, outside the test split)."),
        "",
        *lines, "",
        *series_table,
        *([
            "Mean angle-corrected cord CSA of each segmentation against that of the reference mask (`--csa`; what the",
            "morphometry table inherits; volumes whose segmentation failed are left out):", "",
            "| model | data | volumes | CSA error, mean (%) | CSA error, mean absolute (%) |", "|---|---|---|---|---|",
            *csa_lines, "",
        ] if csa_lines else []),
        "| model | seconds for a 320 x 320 x 20 sagittal MRI |", "|---|---|", *speed_lines, "",
    ])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
