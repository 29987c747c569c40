"""How fast a task's network fits one fixed batch: a check of architecture and initialisation, not of accuracy.

    python benchmarks/fit_batch.py --config Training/configs/cordseg.yaml --set task_options.context_slices=2
    python benchmarks/fit_batch.py --config Training/configs/cordseg.yaml --set model.network=unet \
        --set task_options.class_prior=[]

Draws one training batch (the first ``--volumes`` training items of the configuration's manifest and fold, through the
task's training transforms with augmentation as configured, seeded) and takes ``--steps`` optimiser steps on it
(AdamW with the configuration's learning rate, weight decay and gradient clipping; no warm-up, no schedule). Every
``--every`` steps it prints the loss and the task's figures, both measured on the batch by the step's own forward
pass (before that step's update). A network that cannot fit one batch quickly will not learn a cohort on a CPU budget
(the cordseg SAttisUNet before its output layer started at the class prior). Prints the machine; never fails for being
slow.
"""

from __future__ import annotations

import argparse
import sys
import time

from cspineai.environment import machine_summary


def fixed_batch(task, config: dict, volumes: int) -> dict:
    """One collated training batch from the first ``volumes`` training items of the configured fold."""
    from cspineai.training import data as data_mod

    cases = data_mod.load_cases(config["manifest"], tuple(task.required_columns))
    train, _ = data_mod.split_cases(cases, config["data"]["fold"], config["data"]["folds"], config["seed"],
                                    task.stratify_by)
    transform = task.transforms(config, train=True)
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(config["seed"])
    samples = []
    for item in task.data_items(train, config)[:volumes]:
        out = transform(item)
        samples += out if isinstance(out, list) else [out]
    return task.collate()(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training configuration (Training/configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--volumes", type=int, default=3, help="training items (volumes) in the batch")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=20, help="print every N steps (and the first and last)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)

    import torch

    from cspineai.training.config import load_config
    from cspineai.training.data import seed_everything
    from cspineai.training.tasks import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    seed_everything(config["seed"], deterministic=False)
    task = get_task(config["task"])
    batch = fixed_batch(task, config, args.volumes)
    model = task.build_model(config).train()
    optim = config["optim"]
    optimiser = torch.optim.AdamW(model.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"])
    print(f"machine: {machine_summary()}")
    print(f"task {config['task']}, network {config['model']['network']}, {args.volumes} volumes, "
          f"batch {tuple(batch['image'].shape)}, lr {optim['lr']:g}, overrides: {' '.join(args.overrides) or 'none'}")
    start = time.perf_counter()
    for step in range(args.steps + 1):
        loss, outputs = task.step(model, batch, config)
        if step % args.every == 0 or step == args.steps:
            figures = task.compute_metrics(outputs, config)
            shown = " ".join(f"{k} {v:.3f}" for k, v in figures.items())
            print(f"step {step:4d}  loss {float(loss.detach()):.3f}  {shown}  {time.perf_counter() - start:.0f} s",
                  flush=True)
        if step == args.steps:
            break
        optimiser.zero_grad()
        loss.backward()
        if optim["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim["grad_clip"])
        optimiser.step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
