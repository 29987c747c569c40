"""Volume I/O and scene conversion times for a CT-sized volume (512 x 512 x 200 int16, about 100 MB).

    python benchmarks/bench_io.py                # default size, 3 repeats
    python benchmarks/bench_io.py --size 256 256 100 --repeats 5

Prints, for each step, the median and the fastest of ``--repeats`` runs: NIfTI write and read (``cspineai.io``,
compressed ``.nii.gz`` and plain ``.nii``), ``Volume -> volume node`` (voxels and geometry only, then with the default
display node, whose automatic window/level is most of the cost) and ``volume node -> Volume`` (``cspineai.scene``), and
the machine (platform, Python, CPU count). Prints only; never fails for being slow. On a shared machine the figures are
indicative: run it alone to compare machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cspineai.environment import machine_summary

REPO = Path(__file__).resolve().parents[1]
try:
    import cspineai  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "Logic"))


def timed(step: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Median and minimum wall time (s) of ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), result


def ct_like_volume(size_ijk: tuple[int, int, int]):
    """A deterministic int16 CT-like volume (air, soft tissue, a bone block, mild noise) on a 0.5 x 0.5 x 1 mm grid."""
    import numpy as np

    from cspineai.volume import Volume

    ni, nj, nk = size_ijk
    rng = np.random.default_rng(0)
    array = np.full((nk, nj, ni), -1000, dtype=np.int16)
    array[:, nj // 8 : 7 * nj // 8, ni // 8 : 7 * ni // 8] = 40
    array[:, nj // 3 : nj // 2, 2 * ni // 5 : 3 * ni // 5] = 900
    array += rng.integers(-20, 21, size=array.shape, dtype=np.int16)
    return Volume(array, (0.5, 0.5, 1.0), (-128.0, -128.0, 0.0), modality="CT_bone", source="benchmark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 200), metavar=("I", "J", "K"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from cspineai.geometry import physically_equal
    from cspineai.io import read_volume, write_volume
    from cspineai.scene import create_context, node_to_volume, volume_to_node

    volume = ct_like_volume(tuple(args.size))
    megabytes = volume.array.nbytes / 2**20
    print(f"machine: {machine_summary()}")
    print(
        f"volume: {args.size[0]} x {args.size[1]} x {args.size[2]} int16 ({megabytes:.0f} MB), {args.repeats} repeats"
    )
    print(f"{'step':<28} {'median s':>9} {'min s':>8} {'MB/s':>8}")

    def report(name: str, median: float, fastest: float) -> None:
        print(f"{name:<28} {median:9.3f} {fastest:8.3f} {megabytes / median:8.0f}")

    with tempfile.TemporaryDirectory(prefix="cspineai-bench-io-") as tmp:
        for suffix in (".nii.gz", ".nii"):
            path = Path(tmp) / f"ct{suffix}"
            median, fastest, _ = timed(lambda path=path: write_volume(volume, path), args.repeats)
            report(f"write {suffix}", median, fastest)
            median, fastest, loaded = timed(lambda path=path: read_volume(path), args.repeats)
            report(f"read {suffix}", median, fastest)
            if not physically_equal(loaded, volume):
                print(f"warning: {suffix} round trip changed the volume", file=sys.stderr)

        context = create_context()  # outside the timing: the one-off `import slicer` costs about a second
        median, fastest, _ = timed(lambda: volume_to_node(volume, "CT", context=context, show=False), args.repeats)
        report("Volume -> node (voxels)", median, fastest)
        # With the default display node Slicer also computes the automatic window/level from the histogram.
        median, fastest, node = timed(lambda: volume_to_node(volume, "CT", context=context), args.repeats)
        report("Volume -> node (+display)", median, fastest)
        median, fastest, back = timed(lambda: node_to_volume(node), args.repeats)
        report("volume node -> Volume", median, fastest)
        if not physically_equal(back, volume):
            print("warning: node round trip changed the volume", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
