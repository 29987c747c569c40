"""``cspineai demo``: generate a synthetic case and write it as a Slicer scene bundle plus a picture of the slice views.

Needs no data and no model: the case comes from the phantom generator (:func:`cspineai.phantom.generate_case`), with its
CT->MRI displacement as a grid transform so that the CT opens aligned with the MRI in Slicer.
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="write a synthetic case as a Slicer scene (.mrb) and a PNG of its slice views",
        description="Generate a synthetic case (phantom) and write it as a Slicer scene bundle (case.mrb: CT, MRI, "
        "label segmentations, CT->MRI grid transform, label volume table) plus a PNG of the slice views (views.png).",
    )
    parser.add_argument("--out", required=True, help="output folder (created; holds case.mrb and views.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    parser.add_argument("--seed", type=int, default=0, help="phantom random seed (default 0)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import time
    from pathlib import Path

    from ..errors import CSpineInputError
    from ..phantom import generate_case
    from ..scene import write_case_scene

    if Path(args.out).exists() and not args.overwrite:
        # Refuse before spending time on the phantom (the writer would refuse too, but only at the end).
        raise CSpineInputError(args.out, "output folder already exists; choose another folder or pass --overwrite")
    start = time.perf_counter()
    case = generate_case(seed=args.seed)
    generated = time.perf_counter()
    result = write_case_scene(
        case.series,
        case.labels,
        args.out,
        displacement=case.displacement,
        reference_series="T1_sag",
        overwrite=args.overwrite,
    )
    done = time.perf_counter()
    print(f"scene bundle: {result.bundle}")
    print(f"slice views:  {result.views}")
    print(f"time: {done - start:.1f} s (phantom {generated - start:.1f} s, scene {done - generated:.1f} s)")
    return 0
