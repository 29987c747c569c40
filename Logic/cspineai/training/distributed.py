"""Multi-process training under ``torchrun``: process group, device per rank, rank-0-only writing.

``torchrun --nproc_per_node=N Training/train.py ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them the
run is a single process and nothing here starts a process group. Backend: NCCL when the ranks use CUDA, gloo otherwise
(CPU training, tests). Only rank 0 writes checkpoints, logs and metrics; the other ranks wait at barriers.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os

import torch
import torch.distributed as dist

from ..errors import CSpineInputError


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available; ``cuda`` under torchrun means ``cuda:LOCAL_RANK``."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CSpineInputError("device", f"{requested} requested but no CUDA device is available")
        return torch.device(requested if ":" in requested else f"cuda:{local_rank}")
    if requested != "cpu":
        raise CSpineInputError("device", f"{requested!r} is not auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def init_distributed(requested_device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; return this process's rank and device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world_size, local_rank, device)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(info: DistInfo, value):
    """Rank 0's ``value`` on every rank (used for decisions such as early stopping)."""
    if not info.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` (already on ``info.device``) when distributed."""
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        # Collect the finished run's DDP wrapper (its reducer holds gloo work objects with tensors) while the process
        # group and the interpreter are alive: gloo threads left holding them at exit can abort the process.
        gc.collect()
        dist.destroy_process_group()
