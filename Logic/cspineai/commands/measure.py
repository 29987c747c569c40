"""``cspineai measure``: cord morphometry (CSA, diameters, shape, SAC, MSCC) from a cord mask, written as CSV + PNG."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "measure",
        help="cord morphometry from a cord mask: CSA per slice and per vertebral level (CSV + PNG)",
        description="Measure the spinal cord on a cord mask the way the Spinal Cord Toolbox does (angle-corrected CSA, "
        "AP/RL diameters, compression ratio, solidity, orientation), with SAC from a CSF mask and per-level means "
        "from a vertebral label map. Writes <stem>_slices.csv, <stem>_levels.csv and <stem>_csa.png.",
    )
    parser.add_argument("--cord", required=True, help="cord mask: binary, soft (0..1) or a label map (cord = 1)")
    parser.add_argument("--csf", help="CSF or canal mask (binary, soft, or label map with CSF = 2) for SAC")
    parser.add_argument("--levels", help="label map with vertebral bodies C2..T1 (values 3..9) for per-level means")
    parser.add_argument("--out", default="morphometry", help="output folder (default: ./morphometry)")
    parser.add_argument("--stem", default="morphometry", help="file name prefix of the outputs (default: morphometry)")
    parser.add_argument(
        "--no-angle-correction", action="store_true", help="report the area in the slice plane (SCT -angle-corr 0)"
    )
    parser.add_argument(
        "--centreline-fit",
        choices=("bspline", "polyfit"),
        default="bspline",
        help="centreline fit (SCT default: bspline)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    import math

    from ..io import read_volume
    from ..morphometry import measure_cord, write_outputs

    cord = read_volume(args.cord, allow_constant=True)
    csf = read_volume(args.csf, allow_constant=True) if args.csf else None
    levels = read_volume(args.levels, allow_constant=True) if args.levels else None
    result = measure_cord(
        cord, csf=csf, levels=levels, angle_correction=not args.no_angle_correction, centreline_fit=args.centreline_fit
    )
    written = write_outputs(result, args.out, stem=args.stem)
    s = result.summary
    print(
        f"{s['slices']} slices, {s['length_mm']:.1f} mm of cord: CSA {s['csa_mean_mm2']:.2f} "
        f"+- {s['csa_sd_mm2']:.2f} mm2 (no angle correction: {s['area_mean_mm2']:.2f} mm2)"
    )
    for row in result.levels:
        sac = f"  SAC/CSA {row['sac_csa_ratio']:.2f}" if math.isfinite(row["sac_csa_ratio"]) else ""
        print(f"  {row['level']:<3} {row['slices']:3d} slices  CSA {row['csa_mm2']:.2f} mm2{sac}")
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0
