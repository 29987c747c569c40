"""Shared fixtures. Tests that read ../shared/data skip cleanly when it is absent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The Slicer module's Qt-free classes (CSpineAILib) are tested as Slicer imports them: from the module folder.
sys.path.insert(0, str(REPO / "CSpineAI"))
SHARED_DATA = Path(os.environ.get("CSPINEAI_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_T1 = SHARED_DATA / "real" / "sct_t1w"


def pytest_configure(config):
    # One torch thread for the whole suite: its networks are tiny, and on a 2-core machine a second OpenMP thread mostly
    # spin-waits (measured 5-10x slower training steps when other processes share the cores).
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def real_t1_dir() -> Path:
    """The shared real T1 MRI with its manual cord mask; skips when ../shared/data is not present."""
    if not (REAL_T1 / "t1w.nii.gz").is_file():
        pytest.skip(f"shared real data not present at {REAL_T1}")
    return REAL_T1


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
