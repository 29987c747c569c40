"""Multi-process training: ``torchrun --nproc_per_node=2`` with the gloo backend on the CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cspineai.tasks.toy import ToyNet, write_toy_cohort
from cspineai.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [shutil.which("torchrun") or "torchrun"]


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes_trains_and_its_checkpoint_loads(tmp_path):
    manifest = write_toy_cohort(tmp_path / "cohort", n_cases=12, shape=(6, 12, 12))
    raw = yaml.safe_load((REPO / "Training" / "configs" / "toy.yaml").read_text(encoding="utf-8"))
    raw.update(manifest=str(manifest), output_dir=str(tmp_path / "run"), device="cpu")
    raw["optim"]["epochs"] = 2
    raw["log"]["tensorboard"] = False
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*_torchrun(), "--standalone", "--nproc_per_node=2", str(REPO / "Training" / "train.py"),
         "--config", str(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 process(es)" in result.stdout
    assert result.stdout.count("task toy:") == 1  # only rank 0 reports
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["epoch"] == 2
    assert not any(k.startswith("module.") for k in state["model"])  # saved without DDP's wrapper prefix
    model = ToyNet(raw["model"]["width"], raw["model"]["dropout"])
    model.load_state_dict(state["model"])
    rows = (tmp_path / "run" / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 6, 12, 12)).shape == (1, 2)
