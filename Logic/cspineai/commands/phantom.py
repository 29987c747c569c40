"""``cspineai phantom``: generate a synthetic CT + MRI cohort with labels, true registration and outcome."""

from __future__ import annotations

# The names of cspineai.phantom.protocol.PRESETS, written out: importing the phantom package here would load scipy on
# every CLI start (commands import heavy packages inside ``run``); a test keeps the two lists equal.
RESOLUTIONS = ("coarse", "default", "thin")


def register(subparsers) -> None:
    parser = subparsers.add_parser("phantom", help="generate a synthetic cervical-spine cohort (CT, MRI, labels)")
    parser.add_argument("--n", type=int, required=True, help="number of cases")
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per case and manifest.csv)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (same seed, same files)")
    parser.add_argument("--randomize", action="store_true", help="domain-randomised acquisitions")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--resolution", default="default", choices=RESOLUTIONS,
                        help="protocol preset (coarse: fast, for tests; thin: 3-D sagittal series, ~1 mm slices)")
    parser.add_argument("--vary-cord", action="store_true",
                        help="cord size and CSF space drawn independently of the bony canal")
    parser.set_defaults(func=run)


def run(args) -> int:
    import logging
    import time

    from ..phantom import generate_cohort

    log = logging.getLogger("cspineai.phantom")
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        log.info(f"case {done}/{total} ({time.perf_counter() - start:.0f} s)")

    manifest = generate_cohort(args.n, args.out, args.seed, randomize=args.randomize, workers=args.workers,
                               resolution=args.resolution, vary_cord=args.vary_cord, progress=progress)
    log.info(f"wrote {manifest}")
    return 0
