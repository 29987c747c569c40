"""The task-agnostic training loop: AdamW, step decay with optional warm-up, clipping, mixed precision, accumulation,
EMA, early stopping, per-epoch atomic checkpoints and exact resume; fine-tuning starts from ``init_from``'s weights.

The loop talks to the task only through :class:`cspineai.training.tasks.Task` (model factory, data items, transforms,
step, metrics). Outputs of a run in ``output_dir``: ``config.yaml`` (resolved), ``checkpoints/last.pt`` (every epoch),
``checkpoints/best.pt`` (best monitored validation figure), ``metrics.csv`` (per epoch), ``metrics.json`` (final), and
``tensorboard/`` when TensorBoard is installed.

Resume: ``last.pt`` holds everything that evolves during training (weights, optimiser, scheduler, scaler, EMA, RNG
states, history, early-stopping counters); data order and augmentations are functions of ``(seed, epoch)``
(:mod:`.data`). A run killed at any point and resumed therefore repeats the uninterrupted run from the last completed
epoch on; on the CPU the final weights are bitwise identical (tested).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..errors import CSpineInputError, CSpineModelError
from ..progress import CancelToken
from . import data as data_mod
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, unwrap
from .config import config_differences, dump_config
from .distributed import DistInfo, barrier, broadcast_object, wrap_model
from .init_from import initialise_weights
from .logging import RunLogger
from .tasks import Task, get_task

#: Keys that may change between a run and its resumption (they do not alter what an epoch computes).
#: (``manifest``: the path may change when the data moved; its cases must stay the same.)
RESUMABLE_CHANGES = ("optim.epochs", "early_stopping.patience", "early_stopping.min_delta", "data.num_workers",
                     "data.val_every", "log.every_steps", "log.tensorboard", "device", "output_dir", "manifest")


def to_device(batch, device: torch.device):
    """Move tensors inside nested dicts/lists/tuples to ``device``; leave other values (case ids, paths) as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def concat_outputs(chunks: list[dict]) -> dict:
    """Per-step output dicts -> one dict: tensors concatenated on the batch axis (on the CPU), lists extended."""
    merged: dict = {}
    for chunk in chunks:
        for key, value in chunk.items():
            merged.setdefault(key, []).append(value)
    out = {}
    for key, values in merged.items():
        if all(isinstance(v, torch.Tensor) for v in values):
            out[key] = torch.cat([v.detach().float().cpu().reshape(-1, *v.shape[1:]) if v.ndim else
                                  v.detach().float().cpu().reshape(1) for v in values])
        else:
            out[key] = [x for v in values for x in (v if isinstance(v, list | tuple) else [v])]
    return out


def lr_factor(epoch: int, warmup_epochs: int, step_size: int, gamma: float) -> float:
    """Learning-rate factor of epoch ``epoch`` (0-based): linear warm-up, then ``gamma`` every ``step_size`` epochs."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    return gamma ** ((epoch - warmup_epochs) // step_size)


class _LrSchedule:
    """The epoch -> factor rule for ``LambdaLR``; an object, not a lambda, so that the scheduler's state dict records
    its three numbers (plain values, loadable with ``weights_only=True``)."""

    def __init__(self, optim: dict):
        self.warmup_epochs, self.step_size, self.gamma = optim["warmup_epochs"], optim["step_size"], optim["gamma"]

    def __call__(self, epoch: int) -> float:
        return lr_factor(epoch, self.warmup_epochs, self.step_size, self.gamma)


def autocast_context(device: torch.device, amp: str):
    """Mixed precision on CUDA (bf16 or fp16); a no-op on the CPU, where it rarely pays and changes the numbers."""
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _improved(value: float | None, best: float | None, mode: str, min_delta: float) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _monitor_text(task: Task) -> str:
    return f"{task.monitor} ({'lower' if task.monitor_mode == 'min' else 'higher'} is better)"


@torch.no_grad()
def run_validation(task: Task, model: torch.nn.Module, loader, config: dict, device: torch.device,
                   fitted: dict | None = None, cancel: CancelToken | None = None) -> tuple[dict, dict]:
    """Score ``model`` on every batch of ``loader``; ``(figures, outputs)`` with ``figures["loss"]`` the mean loss.

    ``cancel`` is checked before every batch (a validation can take longer than a cluster's grace period).
    """
    was_training = model.training
    model.eval()
    chunks, losses, counts = [], [], []
    try:
        for batch in loader:
            if cancel is not None:
                cancel.raise_if_cancelled()
            batch = to_device(batch, device)
            with autocast_context(device, config["optim"]["amp"]):
                loss, outputs = task.step(model, batch, config)
            chunks.append(outputs)
            n = _batch_size(outputs)
            losses.append(float(loss) * n)
            counts.append(n)
    finally:
        model.train(was_training)
    outputs = concat_outputs(chunks)
    figures = {"loss": sum(losses) / max(sum(counts), 1)}
    figures.update({k: float(v) for k, v in task.compute_metrics(outputs, config, fitted).items()})
    return figures, outputs


def _batch_size(outputs: dict) -> int:
    for value in outputs.values():
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
        if isinstance(value, list):
            return len(value)
    return 1


def _ema_model(model: torch.nn.Module, decay: float):
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def fit(config: dict, info: DistInfo | None = None, resume: bool = False, cancel: CancelToken | None = None,
        stream=None) -> dict:
    """Train ``config["task"]`` as configured; return the final figures (also written to ``metrics.json``).

    Args:
        config: resolved configuration (:func:`cspineai.training.config.load_config`).
        info: rank and device (:func:`cspineai.training.distributed.init_distributed`); default single CPU process.
        resume: continue from ``output_dir/checkpoints/last.pt``.
        cancel: checked between training steps and validation batches; cancelling raises :class:`CSpineCancelled`
            and keeps the last checkpoint (an epoch stopped during its validation is kept, unvalidated).
        stream: where progress goes (default standard output).
    """
    info = info or DistInfo()
    task = get_task(config["task"])
    out = Path(config["output_dir"])
    ckpt_dir = out / "checkpoints"
    optim = config["optim"]
    device = info.device

    data_mod.seed_everything(config["seed"], config["deterministic"])
    # Everything that can be wrong with the inputs fails here, before any training.
    cases = data_mod.load_cases(config["manifest"], tuple(task.required_columns))
    train_cases, val_cases = data_mod.split_cases(cases, config["data"]["fold"], config["data"]["folds"],
                                                  config["seed"], task.stratify_by)
    if info.is_main and not resume and (ckpt_dir / "last.pt").exists():
        raise CSpineInputError(out, "already holds a run (checkpoints/last.pt); resume it with --resume or choose "
                                    "another output_dir")
    cache_dir = Path(config["data"]["cache_dir"] or out / "cache")
    workers = config["data"]["num_workers"]
    train_ds = data_mod.make_dataset(task.data_items(train_cases, config), task.transforms(config, True),
                                     config["data"]["cache"], cache_dir / "train", workers)
    val_ds = (data_mod.make_dataset(task.data_items(val_cases, config), task.transforms(config, False),
                                    config["data"]["cache"], cache_dir / "val", workers) if val_cases else None)

    model = task.build_model(config).to(device)
    init, init_note = None, ""  # init: what the weights started from, kept in every checkpoint for the model card
    if config.get("init_from") and not resume:  # on resume the checkpoint holds the weights that training reached
        start = initialise_weights(model, config)
        init, init_note = start.record, f"initialised from {start.label} (sha256 {start.record['sha256'][:12]})"
    ema = _ema_model(model, optim["ema"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _LrSchedule(optim))
    use_scaler = device.type == "cuda" and optim["amp"] == "fp16"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    start_epoch, history = 0, []
    best = {"value": None, "epoch": 0}
    bad_epochs = 0
    if resume:
        if not (ckpt_dir / "last.pt").is_file():
            raise CSpineInputError(out, "holds no checkpoint to resume (checkpoints/last.pt); start without --resume")
        state = load_checkpoint(ckpt_dir / "last.pt")
        changed = [k for k in config_differences(state["config"], config) if k not in RESUMABLE_CHANGES]
        if changed:
            raise CSpineInputError(ckpt_dir / "last.pt", "the configuration differs from the interrupted run's in "
                                                         f"{', '.join(changed)}; resume with the same settings")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        start_epoch, history, init = int(state["epoch"]), list(state["history"]), state.get("init")
        best, bad_epochs = dict(state["best"]), int(state["bad_epochs"])
        set_rng_state(state["rng"])
    model_w = wrap_model(model, info)

    logger = RunLogger(out, optim["epochs"], enabled=info.is_main, every_steps=config["log"]["every_steps"],
                       tensorboard=config["log"]["tensorboard"], stream=stream)
    if info.is_main:
        atomic_write_text(out / "config.yaml", dump_config(config))
        logger.message(f"task {task.name}: {len(train_cases)} training / {len(val_cases)} validation cases, "
                       f"device {device}, {info.world_size} process(es)"
                       + (f", resuming after epoch {start_epoch}" if resume else ""))
        if init_note:
            logger.message(init_note)
    batch_size = config["data"]["batch_size"]
    val_batch = config["data"]["val_batch_size"] or batch_size
    val_every = config["data"]["val_every"]
    collate = task.collate()
    stop = start_epoch >= optim["epochs"]

    def training_state(epochs_done: int, rows: list[dict], best: dict, bad_epochs: int) -> dict:
        """What last.pt / best.pt hold: enough to resume exactly, and the history and init for the model card."""
        return {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "epoch": epochs_done,
            "rng": rng_state(),
            "config": config,
            "history": rows,
            "best": best,
            "bad_epochs": bad_epochs,
            "task": task.name,
            "init": init,
        }

    for epoch in range(start_epoch, optim["epochs"]):
        if stop:
            break
        task.on_epoch_start(epoch, config)
        loader = data_mod.make_loader(train_ds, batch_size, True, config["seed"], epoch, workers, collate,
                                      info.rank, info.world_size, pin_memory=device.type == "cuda")
        lr = optimizer.param_groups[0]["lr"]
        train_loss, samples, seconds = _train_epoch(task, model_w, ema, loader, optimizer, scaler, config, info,
                                                    logger, epoch, cancel)
        scheduler.step()

        row: dict = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
                     "train_samples_per_s": samples / max(seconds, 1e-9)}
        improved = False
        # A long validation (every slice of every cordseg volume: minutes on a CPU) need not follow every epoch.
        validate = val_ds is not None and ((epoch + 1) % val_every == 0 or epoch + 1 == optim["epochs"])
        if info.is_main and validate:
            # The trained epoch is kept before validating it: a run stopped during validation (SIGTERM is honoured
            # between validation batches) resumes after this epoch, whose validation figures are then missing.
            save_checkpoint(ckpt_dir / "last.pt", training_state(epoch + 1, history + [row], best, bad_epochs))
            val_loader = data_mod.make_loader(val_ds, val_batch, False, config["seed"], epoch, workers, collate)
            figures, _ = run_validation(task, ema.module if ema is not None else model, val_loader, config, device,
                                        cancel=cancel)
            row.update({f"val_{k}": v for k, v in figures.items()})
            value = figures.get(task.monitor)
            if value is None:
                raise CSpineModelError(f"task {task.name}: monitored figure {task.monitor!r} is not among the "
                                       f"validation figures {sorted(figures)}")
            improved = _improved(value, best["value"], task.monitor_mode, config["early_stopping"]["min_delta"])
            if improved:
                best = {"value": float(value), "epoch": epoch + 1}
                bad_epochs = 0
            else:
                bad_epochs += 1
        patience = config["early_stopping"]["patience"]
        stop = bool(patience and val_ds is not None and bad_epochs >= patience)
        if info.is_main:
            final = training_state(epoch + 1, history + [row], best, bad_epochs)
            save_checkpoint(ckpt_dir / "last.pt", final)
            if improved or val_ds is None:
                save_checkpoint(ckpt_dir / "best.pt", final)
        history.append(row)
        if info.is_main:
            logger.end_epoch(row, history)
            if stop:
                logger.message(f"early stopping: {_monitor_text(task)} did not improve for {patience} epochs "
                               f"(best {best['value']} at epoch {best['epoch']})")
        stop = broadcast_object(info, stop)
        barrier(info)

    result = {
        "task": task.name,
        "epochs_completed": len(history),
        "monitor": task.monitor,
        "monitor_mode": task.monitor_mode,
        "best_epoch": best["epoch"],
        "best_value": best["value"],
        "n_train": len(train_cases),
        "n_val": len(val_cases),
        "fold": config["data"]["fold"],
        "final": history[-1] if history else {},
        "best": history[best["epoch"] - 1] if best["epoch"] else (history[-1] if history else {}),
    }
    logger.finish(result)
    return result


def _train_epoch(task, model, ema, loader, optimizer, scaler, config, info, logger, epoch, cancel):
    """One pass over ``loader``; returns (mean loss over all ranks, samples seen by all ranks, seconds)."""
    optim = config["optim"]
    accumulate = optim["accumulate"]
    device = info.device
    model.train()
    optimizer.zero_grad(set_to_none=True)
    steps = len(loader)
    logger.start_epoch(epoch, steps)
    total = torch.zeros(2, dtype=torch.float64)  # (sum of loss * samples, samples)
    start = time.perf_counter()
    for index, batch in enumerate(loader):
        if cancel is not None:
            cancel.raise_if_cancelled()
        batch = to_device(batch, device)
        last_of_group = (index + 1) % accumulate == 0 or index + 1 == steps
        # Between optimiser steps DDP need not all-reduce gradients: no_sync saves the communication.
        sync = contextlib.nullcontext() if last_of_group or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast_context(device, optim["amp"]):
                loss, outputs = task.step(model, batch, config)
            if not torch.isfinite(loss.detach()):
                raise CSpineModelError(f"the training loss became {float(loss)} at epoch {epoch + 1}, step "
                                       f"{index + 1}; lower optim.lr or enable optim.grad_clip")
            scaler.scale(loss / accumulate).backward()
        if last_of_group:
            if optim["grad_clip"] > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update_parameters(unwrap(model))
        n = _batch_size(outputs)
        total += torch.tensor([float(loss.detach()) * n, n], dtype=torch.float64)
        logger.step(index + 1, float(loss.detach()))
    seconds = time.perf_counter() - start
    if info.distributed:
        import torch.distributed as dist

        dist.all_reduce(total)
    return float(total[0] / max(total[1], 1)), int(total[1]), seconds
