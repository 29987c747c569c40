"""Training throughput (samples/s) of a task on this machine.

    python benchmarks/bench_train.py                                   # toy task on a generated toy cohort
    python benchmarks/bench_train.py --config Training/configs/pain.yaml --set manifest=/data/cohort/manifest.csv

Runs ``--epochs`` epochs without validation in a temporary folder and prints the samples/s of each epoch and the median
of the epochs after the first (which pays for first-touch allocations and file caches). Prints the machine too; never
fails for being slow. With the toy config and no manifest given, a toy cohort is generated first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from cspineai.environment import machine_summary

REPO = Path(__file__).resolve().parents[1]
try:
    import cspineai  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "Logic"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "Training" / "configs" / "toy.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--toy-cases", type=int, default=32, help="size of the generated toy cohort")
    args = parser.parse_args(argv)

    import torch

    from cspineai.training.config import load_config
    from cspineai.training.distributed import DistInfo, pick_device
    from cspineai.training.loop import fit

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="cspineai-bench-") as tmp:
        overrides = list(args.overrides)
        config = load_config(args.config, overrides)
        if config["task"] == "toy" and not any(o.startswith("manifest=") for o in overrides):
            from cspineai.tasks.toy import write_toy_cohort

            overrides.append(f"manifest={write_toy_cohort(Path(tmp) / 'cohort', n_cases=args.toy_cases)}")
        overrides += [f"output_dir={Path(tmp) / 'run'}", f"optim.epochs={args.epochs}", "data.fold=-1",
                      "log.tensorboard=false", "log.every_steps=1000000"]
        config = load_config(args.config, overrides)
        device = pick_device(config["device"])
        print(f"machine: {machine_summary()}; device {device}")
        print(f"task {config['task']}: batch {config['data']['batch_size']}, workers {config['data']['num_workers']}, "
              f"cache {config['data']['cache']}, amp {config['optim']['amp']}")
        with open(os.devnull, "w") as quiet:
            result = fit(config, DistInfo(device=device), stream=quiet)
        del result
        history = torch.load(Path(tmp) / "run" / "checkpoints" / "last.pt", weights_only=True)["history"]
    rates = [row["train_samples_per_s"] for row in history]
    for row in history:
        print(f"epoch {row['epoch']}: {row['train_samples_per_s']:.1f} samples/s")
    steady = rates[1:] or rates
    print(f"median after the first epoch: {statistics.median(steady):.1f} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
