"""Time the synthetic cohort generator: one case at the default resolution, and optionally a cohort.

    python benchmarks/bench_phantom.py                 # three single cases (seeds 0..2), in memory
    python benchmarks/bench_phantom.py --cohort 20 --workers 2 --out /tmp/cohort   # a cohort written to disk

Prints the machine (CPU count, load average), wall-clock and CPU seconds. Figures taken while other processes share
the cores are indicative only: the load average is printed so a reader can tell.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from cspineai.environment import machine_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3, help="single cases to time (seeds 0..cases-1)")
    parser.add_argument("--resolution", default="default")
    parser.add_argument("--threads", type=int, default=2, help="render threads per case")
    parser.add_argument("--cohort", type=int, default=0, help="also write a cohort of this many cases")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="cohort folder (default: a temporary folder)")
    args = parser.parse_args()

    from cspineai.phantom import generate_case, generate_cohort

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {machine_summary()}; {cpus} CPU(s) usable by this process")
    generate_case(1000, resolution="coarse", threads=1)  # warm-up: imports, caches
    for seed in range(args.cases):
        wall, cpu = time.perf_counter(), time.process_time()
        case = generate_case(seed, resolution=args.resolution, threads=args.threads)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        voxels = sum(v.array.size for v in case.series.values())
        print(f"case seed {seed} ({args.resolution}, {args.threads} thread(s)): {wall:.2f} s wall, {cpu:.2f} s CPU, "
              f"{voxels / 1e6:.1f} M voxels in 5 series")
    if args.cohort:
        out = args.out or tempfile.mkdtemp(prefix="phantom_bench_")
        wall = time.perf_counter()
        generate_cohort(args.cohort, out, seed=0, workers=args.workers, resolution=args.resolution)
        wall = time.perf_counter() - wall
        print(f"cohort of {args.cohort} cases, {args.workers} worker(s): {wall:.1f} s wall "
              f"({wall / args.cohort:.2f} s per case; 250 cases: about {250 * wall / args.cohort / 60:.1f} min)"
              f" -> {out}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
