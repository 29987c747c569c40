"""``cspineai demo`` (``make demo``): the whole pipeline on the bundled synthetic case with the shipped models.

The bundled case is generated on demand, deterministically, by the phantom generator (seed
:data:`cspineai.pipeline.DEMO_SEED`, ``coarse`` protocol; a few seconds): the same five series, labels and CT->MRI
displacement every time, and no image files in the package. The results folder is the one ``cspineai run`` writes
(volumes, CSVs, ``report.json``, ``report.png``/``.pdf``, ``case.mrb`` for desktop Slicer, ``views.png``).

Without the shipped models (``Models.json`` lists none yet) the demo refuses before any work, naming the missing
model(s). ``--scene-only`` writes the phantom's ground truth as a scene instead (the previous demo), which needs no
model. ``--docs-images`` copies ``report.png`` and ``views.png`` into ``docs/images/`` for the README.
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on the bundled synthetic case with the shipped models",
        description="Generate the bundled synthetic case (phantom, fixed seed), run registration, prediction, "
        "saliency, cord segmentation and morphometry with the shipped models, and write the results folder with a "
        "Slicer scene bundle (case.mrb). Prints where the results are and the timing.",
    )
    parser.add_argument("--out", required=True, help="output folder (created; holds case.mrb, report.png, ...)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto falls back to CPU")
    parser.add_argument("--seed", type=int, default=None, help="phantom seed (default: the bundled case's)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="ROLE=ID",
        help="use this registry model for a role (registration, classifier, segmentation) instead of the shipped one",
    )
    parser.add_argument(
        "--scene-only",
        action="store_true",
        help="write the phantom's ground truth (labels, true displacement) as a scene, without running the models",
    )
    parser.add_argument(
        "--docs-images",
        metavar="DIR",
        nargs="?",
        const="docs/images",
        default=None,
        help="also copy report.png and views.png to DIR (default docs/images) as demo_report.png, demo_views.png",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    import shutil
    import sys
    import time
    from pathlib import Path

    from ..errors import CSpineInputError
    from ..pipeline import DEMO_RESOLUTION, DEMO_SEED, MODEL_ROLES, resolve_models, run_to_folder
    from ..progress import print_progress

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        # Refuse before spending time on the phantom (the writer would refuse too, but only at the end).
        raise CSpineInputError(args.out, "output folder already exists; choose another folder or pass --overwrite")
    start = time.perf_counter()
    seed = DEMO_SEED if args.seed is None else args.seed
    models = None
    if not args.scene_only:
        # The shipped models first: a missing one is reported before the phantom is generated.
        from .run import parse_models

        models = resolve_models(parse_models(args.model), MODEL_ROLES, "cpu")
    from ..phantom import generate_case

    case = generate_case(seed, resolution=DEMO_RESOLUTION)
    generated = time.perf_counter()
    if args.scene_only:
        from ..scene import write_case_scene

        written = write_case_scene(case.series, case.labels, out, displacement=case.displacement,
                                   reference_series="T1_sag", overwrite=args.overwrite)
        files = {"case.mrb": written.bundle, "views.png": written.views}
        timings = {}
    else:
        progress = print_progress if not sys.stdout.isatty() else _terminal
        result, files = run_to_folder(case.series, out, models=models, device=args.device, progress=progress,
                                      overwrite=args.overwrite)
        timings = result.timings
        if result.prediction is not None:
            print(f"P(postoperative neck pain) = {result.prediction.probability:.3f} "
                  f"(threshold {result.threshold:.3f}); phantom truth: label {case.label}, "
                  f"rule probability {case.probability:.2f}")
    done = time.perf_counter()
    for role in ("case.mrb", "report.png", "report.pdf", "report.json", "views.png"):
        if role in files:
            print(f"{role + ':':<13}{files[role]}")
    if args.docs_images:
        target = Path(args.docs_images)
        target.mkdir(parents=True, exist_ok=True)
        for role, name in (("report.png", "demo_report.png"), ("views.png", "demo_views.png")):
            if role in files:
                shutil.copyfile(files[role], target / name)
                print(f"copied {role} to {target / name}")
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k not in ("total", "read"))
    print(f"time: {done - start:.1f} s (phantom {generated - start:.1f} s"
          + (f", {steps}" if steps else "") + f", writing {done - generated - timings.get('total', 0.0):.1f} s)")
    return 0


def _terminal(step: str, fraction: float, message: str = "") -> None:
    print(f"{100 * fraction:5.1f}%  {step:<9} {message}", flush=True)
