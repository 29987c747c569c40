"""Starting weights of a run (config key ``init_from``): a registered model or a ``.pt`` file written by training.

Fine-tuning continues a trained network, so ``init_from`` fixes both the weights and the architecture:

- ``cordseg-unet`` or ``cordseg-unet@1.0.0``: a model of the shipped or user registry, its file's SHA-256 checked
  (:func:`cspineai.models.registry.load_model_state`);
- a path (ends in ``.pt`` or holds a ``/``): a training checkpoint (``<run>/checkpoints/best.pt``; its EMA weights when
  the run kept them, as ``cspineai export`` takes them) or a registered model file, loaded as it is.

:func:`cspineai.training.config.load_config` takes the run's ``model`` section from the starting model
(:func:`starting_config`), and :func:`initialise_weights` loads the weights into the built model: all of them, key for
key and shape for shape, or a :class:`~cspineai.errors.CSpineModelError` naming the first mismatches (a partial load
would fine-tune a different network from the one named). Every file is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from ..errors import CSpineModelError

_SHOWN = 3  # mismatching keys named in an error; more would bury the advice


def is_path(init_from: str) -> bool:
    """True for a file path, False for a registry id (ids are letters, digits, '-', '_', '.' and an ``@version``)."""
    return init_from.endswith(".pt") or "/" in init_from or os.sep in init_from


@dataclasses.dataclass
class StartingModel:
    """What ``init_from`` names, read and checked.

    Attributes:
        label: the model in words (``registered model cordseg-unet 1.0.0`` or the file's path).
        weights: its state dict (deployable weights: the EMA average when the training run kept one).
        config: the resolved configuration it was trained with.
        record: plain strings kept in the run's checkpoints and model card: ``init_from``, ``model``, ``version``,
            ``file``, ``sha256``.
    """

    label: str
    weights: dict
    config: dict
    record: dict


def read_starting_model(init_from: str, task: str) -> StartingModel:
    """Read what ``init_from`` names and check that it was trained for ``task``."""
    from ..models.registry import find_model, load_model_state, sha256_file
    from .checkpoint import load_checkpoint, model_weights

    if is_path(init_from):
        path = Path(init_from)
        if not path.is_file():
            raise CSpineModelError(f"init_from {path}: file not found (give the path of a checkpoint or model file, "
                                   "or a registered model id)")
        state = load_checkpoint(path)
        label = str(path)
        _check_task(label, state.get("task") or (state.get("config") or {}).get("task"), task)
        record = {"init_from": init_from, "model": "", "version": "", "file": str(path), "sha256": sha256_file(path)}
    else:
        entry = find_model(init_from)  # id or id@version
        label = f"registered model {entry.id} {entry.version}"
        _check_task(label, entry.task, task)  # before the hash check, which reads the whole file
        state = load_model_state(entry)
        record = {"init_from": init_from, "model": entry.id, "version": entry.version, "file": str(entry.path),
                  "sha256": entry.sha256.lower()}
    return StartingModel(label, model_weights(state), dict(state.get("config") or {}), record)


def _check_task(label: str, source_task: str | None, task: str) -> None:
    from ..models.registry import list_models

    if not source_task:
        raise CSpineModelError(f"init_from {label}: the file does not say which task it was trained for; use a "
                               "checkpoint written by Training/train.py or a registered model")
    if source_task != task:
        usable = sorted({e.id for e in list_models() if e.task == task}) or ["none registered"]
        raise CSpineModelError(f"init_from {label} is a {source_task} model and cannot start a {task} run; choose a "
                               f"{task} model ({', '.join(usable)}) or a checkpoint of a {task} run")


def starting_config(init_from: str, task: str) -> dict:
    """The configuration the starting model was trained with: its ``model`` section (and its task's
    ``weight_options``) become the run's, unless ``--set`` says otherwise."""
    return dict(read_starting_model(init_from, task).config)


#: Heads that only serve training (the pain classifier's auxiliary findings head ``aux_head`` and its jointly trained
#: FPRAN ``fpran``, an auxiliary network in paper 000): a starting model may have one that this run does not train
#: (dropped) or lack one this run trains (it starts fresh).
TRAINING_ONLY_PREFIXES = ("aux_head.", "fpran.")


def fitting_weights(model: torch.nn.Module, weights: dict) -> dict:
    """``weights`` adjusted for :data:`TRAINING_ONLY_PREFIXES`: such entries the model lacks are dropped, those the
    file lacks are taken from the model's own (fresh) initialisation. So are the entries under the model's own
    ``fresh_start_prefixes`` that the file lacks: modules a network adds to a smaller starting model, built so that
    they change nothing until trained (e.g. the registration network's image level)."""
    own = model.state_dict()
    fresh = TRAINING_ONLY_PREFIXES + tuple(getattr(model, "fresh_start_prefixes", ()))
    extra = {k: v for k, v in own.items() if k.startswith(fresh) and k not in weights}
    kept = {k: v for k, v in weights.items() if k in own or not k.startswith(TRAINING_ONLY_PREFIXES)}
    return {**kept, **extra}


def weight_mismatches(model: torch.nn.Module, weights: dict) -> list[str]:
    """``key: what differs`` for every entry of ``model``'s state dict that ``weights`` cannot fill exactly, then the
    entries of ``weights`` the model does not have."""
    def shape(value) -> tuple | str:
        return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__

    own = model.state_dict()
    problems = []
    for key, value in own.items():
        if key not in weights:
            problems.append(f"{key} missing from the file")
        elif shape(value) != shape(weights[key]):
            problems.append(f"{key} is {shape(weights[key])} in the file, {shape(value)} in the model")
    problems += [f"{key} in the file is not in the model" for key in weights if key not in own]
    return problems


def initialise_weights(model: torch.nn.Module, config: dict) -> StartingModel:
    """Load the weights ``config["init_from"]`` names into ``model`` (built from ``config``), all or none."""
    from .tasks import get_task

    start = read_starting_model(config["init_from"], config["task"])
    weights = get_task(config["task"]).starting_weights(model, fitting_weights(model, start.weights), config)
    problems = weight_mismatches(model, weights)
    if problems:
        theirs = start.config.get("model") or {}
        differing = [f"model.{k} is {config['model'].get(k)!r} here, {theirs[k]!r} there"
                     for k in sorted(theirs) if config["model"].get(k) != theirs[k]]
        advice = ("; ".join(differing) + ": drop these settings, with init_from the model section follows the "
                  "starting model" if differing else "the model sections agree: the file was saved by another "
                  "version of the network code")
        more = f" and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise CSpineModelError(f"init_from {start.label}: the weights do not fit this run's {config['task']} model "
                               f"({'; '.join(problems[:_SHOWN])}{more}); {advice}")
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:  # what the key and shape check cannot see (a value of another kind)
        raise CSpineModelError(f"init_from {start.label}: the weights do not load into this run's {config['task']} "
                               f"model ({error})") from None
    return start
