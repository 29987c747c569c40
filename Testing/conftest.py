"""Shared fixtures. Tests that read ../shared/data skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CSPINEAI_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_T1 = SHARED_DATA / "real" / "sct_t1w"


def pytest_configure(config):
    # Two cores in CI: keep torch from oversubscribing them when pytest runs tests one after another.
    try:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
    except ImportError:
        pass


@pytest.fixture
def real_t1_dir() -> Path:
    """The shared real T1 MRI with its manual cord mask; skips when ../shared/data is not present."""
    if not (REAL_T1 / "t1w.nii.gz").is_file():
        pytest.skip(f"shared real data not present at {REAL_T1}")
    return REAL_T1


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
