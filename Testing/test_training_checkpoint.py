"""Checkpoint files: safe loading, RNG states that survive weights_only loading, atomic replacement."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cspineai.errors import CSpineModelError
from cspineai.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from cspineai.training.loop import concat_outputs, to_device


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leave a cached Gaussian in NumPy's legacy state
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "rng": rng_state()})
    expected = (random.random(), np.random.normal(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    actual = (random.random(), np.random.normal(), torch.rand(3))
    assert actual[0] == expected[0] and actual[1] == expected[1] and torch.equal(actual[2], expected[2])


def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path):
    import argparse

    # Any class outside torch's safe list would run code on unpickling; weights_only loading refuses it.
    torch.save({"model": argparse.Namespace(x=1)}, tmp_path / "evil.pt")
    with pytest.raises(CSpineModelError, match="evil.pt: not a readable CSpineAI checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(1000)}})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CSpineModelError, match="c.pt"):
        load_checkpoint(tmp_path / "c.pt")


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.zeros(2)}, "epoch": 1})
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for an unpicklable value
        save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.ones(2)}, "epoch": 2, "bad": lambda: 0})
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_step_outputs_are_concatenated_along_the_batch_axis():
    chunks = [{"score": torch.tensor([0.1, 0.2]), "case_id": ["a", "b"], "loss": torch.tensor(1.0)},
              {"score": torch.tensor([0.3]), "case_id": ["c"], "loss": torch.tensor(2.0)}]
    merged = concat_outputs(chunks)
    assert torch.allclose(merged["score"], torch.tensor([0.1, 0.2, 0.3]))
    assert merged["case_id"] == ["a", "b", "c"]
    assert merged["loss"].tolist() == [1.0, 2.0]


def test_nested_batches_move_to_the_device_and_keep_other_values():
    batch = {"image": torch.zeros(1), "pair": [torch.ones(1), "id"], "case_id": ["x"]}
    moved = to_device(batch, torch.device("cpu"))
    assert moved["pair"][1] == "id" and moved["case_id"] == ["x"] and isinstance(moved["pair"][0], torch.Tensor)
