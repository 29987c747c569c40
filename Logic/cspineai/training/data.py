"""From a manifest to data loaders: patient-level folds, MONAI datasets with optional caching, deterministic seeding.

Folds: when every non-test case of the manifest has a ``fold``, those folds are used as they are (the synthetic cohort
and a site's own split). Otherwise folds are computed: cases are grouped by patient (a ``patient_id`` column when
present, else ``case_id``: one case per patient), the groups are shuffled with the run's seed and dealt round-robin
within each label so that every fold holds a similar share of positives. Cases with ``split == "test"`` never enter
training or validation. Hand-written because scikit-learn's ``StratifiedGroupKFold`` is not a dependency of the package.

Determinism: random transforms and the training order are re-seeded from ``(seed, epoch)`` at every epoch, in the main
process and (through the loader's generator) in worker processes, so epoch ``e`` draws the same samples and the same
augmentations whether or not the run was interrupted before it.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import CSpineInputError
from ..manifest import Case, read_manifest


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; with ``deterministic`` request deterministic kernels (warn where none exists)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        # cuBLAS needs this workspace setting for deterministic matmuls on CUDA >= 10.2.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def epoch_seed(seed: int, epoch: int, offset: int = 0) -> int:
    """A distinct 31-bit seed per (run seed, epoch, purpose)."""
    return (seed * 1_000_003 + epoch * 7919 + offset * 104_729) % (2**31 - 1)


def load_cases(manifest: str | os.PathLike, require: tuple[str, ...]) -> list[Case]:
    """Read the manifest; every case must have ``require`` and every listed file must exist (fails at start)."""
    if not manifest:
        raise CSpineInputError("configuration", "no manifest given (set manifest: in the config or --set manifest=...)")
    return read_manifest(manifest, require=require, check_files=True)


def assign_folds(cases: Sequence[Case], folds: int, seed: int, stratify_by: str | None = "label") -> dict[str, int]:
    """``case_id -> fold``; the manifest's own folds when complete, else patient-grouped, label-stratified folds."""
    pool = [c for c in cases if c.split != "test"]
    if pool and all(c.fold is not None for c in pool):
        return {c.case_id: int(c.fold) for c in pool}
    if folds < 2:
        raise CSpineInputError("data.folds", "at least 2 folds are needed to hold out validation cases")
    groups: dict[str, list[Case]] = defaultdict(list)
    for case in pool:
        groups[case.fields.get("patient_id") or case.case_id].append(case)
    strata: dict[object, list[str]] = defaultdict(list)
    for patient, members in sorted(groups.items()):
        key = getattr(members[0], stratify_by, None) if stratify_by else None
        strata[key].append(patient)
    rng = np.random.default_rng(seed)
    assignment, offset = {}, 0
    for key in sorted(strata, key=str):
        patients = list(strata[key])
        rng.shuffle(patients)
        for n, patient in enumerate(patients):
            for case in groups[patient]:
                assignment[case.case_id] = (n + offset) % folds
        offset += len(patients)  # continue the deal where the previous stratum stopped, to balance fold sizes
    return assignment


def split_cases(cases: Sequence[Case], fold: int, folds: int, seed: int,
                stratify_by: str | None = "label") -> tuple[list[Case], list[Case]]:
    """``(train, validation)`` cases for validation fold ``fold``; ``fold = -1`` trains on all without validation."""
    pool = [c for c in cases if c.split != "test"]
    if fold < 0:
        return pool, []
    assignment = assign_folds(cases, folds, seed, stratify_by)
    available = sorted(set(assignment.values()))
    if fold not in available:
        raise CSpineInputError("data.fold", f"fold {fold} does not exist (folds: {available})")
    train = [c for c in pool if assignment[c.case_id] != fold]
    val = [c for c in pool if assignment[c.case_id] == fold]
    if not train:
        raise CSpineInputError("data.fold", f"no training cases are left outside fold {fold}")
    return train, val


def fold_ids(cases: Sequence[Case], folds: int, seed: int, stratify_by: str | None = "label") -> list[int]:
    return sorted(set(assign_folds(cases, folds, seed, stratify_by).values()))


def make_dataset(items: list[dict], transform: Callable, cache: str = "none", cache_dir: str | Path = "",
                 num_workers: int = 0):
    """A MONAI dataset: plain, ``CacheDataset`` (memory; pays off when loading/resampling dominates and the cohort
    fits in RAM) or ``PersistentDataset`` (disk; reuses preprocessed cases across runs and folds)."""
    from monai.data import CacheDataset, Dataset, PersistentDataset

    if cache == "memory":
        return CacheDataset(items, transform, num_workers=max(num_workers, 1), progress=False)
    if cache == "disk":
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, transform, cache_dir=cache_dir)
    return Dataset(items, transform)


def reseed_transforms(dataset, seed: int) -> None:
    """Re-seed the random transforms of a MONAI dataset (main process; workers are seeded by the loader)."""
    transform = getattr(dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed)


def make_loader(dataset, batch_size: int, train: bool, seed: int, epoch: int, num_workers: int, collate_fn,
                rank: int = 0, world_size: int = 1, pin_memory: bool = False):
    """A ``DataLoader`` for one epoch: shuffled by ``(seed, epoch)`` when training, sharded over ranks when distributed.

    A new loader per epoch costs little and makes the order and the workers' random states a pure function of the epoch.
    """
    from monai.data import DataLoader
    from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler

    generator = torch.Generator()
    generator.manual_seed(epoch_seed(seed, epoch, 1))
    if world_size > 1 and train:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
    elif train:
        sampler = RandomSampler(dataset, generator=generator)
    else:
        sampler = SequentialSampler(dataset)
    if num_workers == 0:
        reseed_transforms(dataset, epoch_seed(seed, epoch, 2 + rank))
    # MONAI's DataLoader seeds each worker's random transforms from torch's per-worker seed, itself drawn from
    # `generator`: worker augmentations are therefore a function of (seed, epoch) as well.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
                      generator=generator, pin_memory=pin_memory, persistent_workers=False)
