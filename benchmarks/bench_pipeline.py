"""The whole demo case through the pipeline: seconds and peak memory per step (target: under 15 s after set-up and
under 3 GB on 2 CPU cores).

    .venv/bin/python benchmarks/bench_pipeline.py [--threads 2] [--device cpu] [--untrained] [--keep DIR]

Default: the shipped models (refuses, naming them, while they are not installed). ``--untrained`` measures the code
path with freshly initialised networks of the shipped architectures (default registration network and classifier:
same compute as trained weights) and, for segmentation, an oracle that returns the phantom's true labels (an
untrained network finds no cord, and the steps after it need one): the segmentation network's own inference time is
then not included (``benchmarks/bench_segmentation.py`` measures it).

"Set-up" (importing torch, MONAI, slicer-core and generating the phantom) is timed apart from the case. Memory is the
process's peak resident set size (``ru_maxrss``) when each step ends: a running maximum, so a step's figure includes
everything before it. Timings depend on the machine's load (printed with the results).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from cspineai.environment import machine_summary

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports KB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def untrained_models(case):
    import torch

    sys.path.insert(0, str(REPO / "Testing"))
    from cspineai.nn.classifier import build_classifier
    from cspineai.nn.fpran import RegistrationNet
    from cspineai.pipeline import PipelineModel
    from test_pipeline_fixtures import OracleSegmenter

    torch.manual_seed(0)
    classifier = build_classifier()
    oracle = OracleSegmenter(case.series["T2_sag"], case.labels["T2_sag"])
    return {
        "registration": PipelineModel("registration", RegistrationNet(), "untrained-fpran",
                                      options={"method": "fpran"}),
        "classifier": PipelineModel("classifier", classifier, "untrained-abpdc", inputs=tuple(classifier.series)),
        "segmentation": PipelineModel("segmentation", oracle, "oracle", inputs=("T2_sag",),
                                      options={"config": oracle.config}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--untrained", action="store_true", help="untrained networks and an oracle segmenter")
    parser.add_argument("--keep", help="write the results folder here instead of a temporary folder")
    args = parser.parse_args()

    start = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    import slicer  # noqa: F401  (set-up: the scene layer's import, timed apart from the case)

    from cspineai.errors import CSpineModelError
    from cspineai.pipeline import MODEL_ROLES, bundled_case, resolve_models, run_case, write_results

    imported = time.perf_counter()
    case = bundled_case()
    generated = time.perf_counter()
    try:
        models = untrained_models(case) if args.untrained else resolve_models(None, MODEL_ROLES, "cpu")
    except CSpineModelError as error:
        print(f"error: {error}\n(use --untrained to time the code path without the shipped models)", file=sys.stderr)
        return 2
    memory = {}

    def progress(step, fraction, message):
        if message.startswith(f"{step} done"):
            memory[step] = peak_rss_mb()

    setup_mb = peak_rss_mb()
    case_start = time.perf_counter()
    result = run_case(case.series, models=models, device=args.device, progress=progress)
    ran = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "results"
        write_results(result, out, overwrite=bool(args.keep))
    written = time.perf_counter()
    memory["write"] = peak_rss_mb()

    print(f"machine: {machine_summary()}")
    print(f"models: {'untrained + oracle segmenter' if args.untrained else 'shipped'}; device {result.device}")
    print(f"set-up: imports {imported - start:.1f} s, phantom {generated - imported:.1f} s, peak {setup_mb:.0f} MB")
    print(f"{'step':<10}{'seconds':>9}{'peak MB':>10}")
    for step in (*result.steps, "write"):
        seconds = result.timings.get(step, written - ran) if step != "write" else written - ran
        print(f"{step:<10}{seconds:>9.2f}{memory.get(step, float('nan')):>10.0f}")
    total = written - case_start
    print(f"case total (steps + writing): {total:.2f} s; peak memory {peak_rss_mb():.0f} MB")
    verdict = {True: "met", False: "NOT met"}
    print(f"targets: < 15 s {verdict[total < 15]}, < 3 GB {verdict[peak_rss_mb() < 3072]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
