"""``cspineai run``: one case through the pipeline into a results folder (what the Slicer module runs in a child).

    cspineai run --ct-bone CT.nrrd --t1-sag T1.nii.gz --t2-sag T2.nii.gz \\
        --steps register,predict,saliency,segment,measure --device auto --model classifier=my-model --out DIR

Progress: when standard output is not a terminal (the Slicer module's process runner, a pipe, a log file) each update
is one machine-readable line (:func:`cspineai.progress.print_progress`); on a terminal, one readable line per update.
The summary at the end names the results folder and the prediction. A cancelled (SIGTERM/SIGINT) or failed run
leaves no results folder.
"""

from __future__ import annotations

SERIES_OPTIONS = {
    "CT_bone": "--ct-bone",
    "CT_tissue": "--ct-tissue",
    "T1_sag": "--t1-sag",
    "T2_sag": "--t2-sag",
    "T2_tra": "--t2-tra",
}

#: cspineai.saliency.METHODS written out (importing that module would load torch on every CLI start; a test keeps
#: the two equal).
SALIENCY_METHODS = ("gradcam", "integrated_gradients", "occlusion")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the pipeline on one case and write a results folder",
        description="Register the CT to the MRI, predict postoperative neck pain with saliency maps, segment the "
        "spinal cord and measure it, then write a results folder (volumes, CSVs, report.json, report.png/.pdf, "
        "case.mrb for Slicer). Only the series that the chosen steps need are required.",
    )
    for series, option in SERIES_OPTIONS.items():
        parser.add_argument(option, dest=series, metavar="PATH", help=f"{series} series (image file or DICOM folder)")
    parser.add_argument(
        "--steps",
        default="register,predict,saliency,segment,measure",
        help="comma-separated steps among register,predict,saliency,segment,measure (default: all)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto falls back to CPU")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="ROLE=ID",
        help="registry model per role (registration, classifier, segmentation); registration also takes bspline "
        "or identity. Default: the shipped models",
    )
    parser.add_argument(
        "--saliency-method",
        default=None,
        choices=SALIENCY_METHODS,
        help="saliency method (default integrated_gradients, cspineai.saliency.DEFAULT_METHOD; occlusion is slow on "
        "a CPU)",
    )
    parser.add_argument("--no-bundle", action="store_true", help="do not write the Slicer scene bundle (case.mrb)")
    parser.add_argument("--out", required=True, help="results folder (created; refused if it exists)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results folder if it exists")
    parser.set_defaults(func=run)


def parse_models(values) -> dict[str, str]:
    """``["classifier=my-model", ...]`` -> ``{"classifier": "my-model"}``; refuses unknown roles and repeats."""
    from ..errors import CSpineInputError
    from ..pipeline import MODEL_ROLES

    models = {}
    for value in values:
        role, sep, model_id = value.partition("=")
        if not sep or not model_id:
            raise CSpineInputError("--model", f"expected ROLE=ID, got {value!r}")
        if role not in MODEL_ROLES:
            raise CSpineInputError("--model", f"unknown role {role!r}; expected one of {list(MODEL_ROLES)}")
        if role in models:
            raise CSpineInputError("--model", f"role {role!r} given twice")
        models[role] = model_id
    return models


def terminal_progress(step: str, fraction: float, message: str = "") -> None:
    print(f"{100 * fraction:5.1f}%  {step:<9} {message}", flush=True)


def run(args) -> int:
    import signal
    import sys
    from pathlib import Path

    from ..errors import CSpineInputError
    from ..pipeline import run_to_folder
    from ..progress import CancelToken, print_progress

    inputs = {series: getattr(args, series) for series in SERIES_OPTIONS if getattr(args, series)}
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    models = parse_models(args.model)
    if Path(args.out).exists() and not args.overwrite:
        raise CSpineInputError(args.out, "output folder already exists; choose another folder or pass --overwrite")

    # SIGTERM (the Slicer module's Cancel) sets the token: the run stops at the next step boundary and the atomic
    # writer removes its partial folder. A second signal, or a kill, ends the process at once.
    cancel = CancelToken()

    def on_signal(signum, _frame):
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    tty = sys.stdout.isatty()
    progress = terminal_progress if tty else print_progress
    try:
        result, written = run_to_folder(
            inputs, args.out, steps, models, args.device, progress, cancel, overwrite=args.overwrite,
            bundle=not args.no_bundle, saliency_method=args.saliency_method,
        )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for note in result.notes:
        print(f"note: {note}")
    if result.prediction is not None:
        p, t = result.prediction.probability, result.threshold
        verdict = "higher" if p >= t else "lower"
        print(f"P(postoperative neck pain) = {p:.3f} (threshold {t:.3f}: {verdict} risk)")
    if result.morphometry is not None and "csa_mean_mm2" in result.morphometry.summary:
        print(f"cord CSA mean {result.morphometry.summary['csa_mean_mm2']:.1f} mm2 over "
              f"{result.morphometry.summary.get('slices', 0)} slices")
    print(f"results: {Path(args.out).absolute()} ({len(written)} files)")
    print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))
    return 0
