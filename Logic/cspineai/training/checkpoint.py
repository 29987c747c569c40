"""Training checkpoints: written atomically every epoch, loaded with ``torch.load(..., weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects), so that loading never executes
code from the file. It holds ``model`` (state dict, without DDP's ``module.`` prefix), ``optimizer``, ``scheduler``,
``scaler``, ``ema`` (or None), ``epoch`` (the number of epochs completed), ``rng`` (see :func:`rng_state`), ``config``
(the resolved configuration), ``history`` (one dict of figures per epoch), ``best`` (monitored value and epoch),
``init`` (what the weights started from, :attr:`cspineai.training.init_from.StartingModel.record`, or None) and
``format`` (:data:`FORMAT`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import CSpineModelError

FORMAT = "cspineai-checkpoint-1"


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) generator states as tensors and lists, loadable with ``weights_only=True``."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or the model itself)."""
    return getattr(model, "module", model)


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely (``weights_only=True``); raise :class:`CSpineModelError` naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise CSpineModelError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated file, foreign pickle, wrong format: all mean "not a usable checkpoint"
        problem = f"{type(error).__name__}: {error}"
        raise CSpineModelError(f"{path}: not a readable CSpineAI checkpoint ({problem})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CSpineModelError(f"{path}: not a CSpineAI checkpoint (no model weights)")
    return state


def model_weights(state: dict) -> dict:
    """The weights to deploy from a checkpoint: the EMA average when the run kept one, else the trained weights."""
    ema = state.get("ema")
    if ema:
        # AveragedModel's state dict: the wrapped module's entries under "module." plus the "n_averaged" counter.
        return {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}
    return state["model"]


def fitted_figures(state: dict) -> dict:
    """Validation figures of the epoch whose weights ``state`` holds, without the ``val_`` prefix.

    Tasks take data-dependent settings (a Youden threshold) from them when scoring other data (Task.compute_metrics).
    An exported model file keeps them under ``fitted``.
    """
    if "fitted" in state:
        return dict(state["fitted"])
    history, epoch = state.get("history") or [], int(state.get("epoch") or 0)
    if not history or epoch < 1:
        return {}
    return {k[4:]: v for k, v in history[epoch - 1].items() if k.startswith("val_")}


def average_weights(weights: list[dict], labels: list[str]) -> dict:
    """The uniform mean of state dicts of one architecture (a "model soup", Wortsman et al. 2022).

    Averaging helps when the models share a starting point (one fine-tuned from the other, or two fine-tunings of one
    model); the mean then lies in the same basin of the loss. Floating-point entries (weights and normalisation
    statistics) are averaged in float64 and kept in their own dtype; other entries (BatchNorm's step counter) are taken
    from the first. Written here because PyTorch's ``AveragedModel`` averages one model during training, not finished
    weight files. ``labels`` name the inputs in errors.

    Raises:
        CSpineModelError: fewer than two inputs, or keys or shapes that differ (named, with the input).
    """
    if len(weights) < 2:
        raise CSpineModelError("averaging weights needs at least two models")
    first = weights[0]
    for other, label in zip(weights[1:], labels[1:], strict=True):
        missing, extra = sorted(set(first) - set(other)), sorted(set(other) - set(first))
        if missing or extra:
            named = [f"{k} missing" for k in missing[:3]] + [f"{k} not in {labels[0]}" for k in extra[:3]]
            raise CSpineModelError(f"{label}: not the architecture of {labels[0]} ({'; '.join(named)})")
        for key, value in first.items():
            if tuple(value.shape) != tuple(other[key].shape):
                raise CSpineModelError(f"{label}: {key} is {tuple(other[key].shape)}, {tuple(value.shape)} in "
                                       f"{labels[0]}; the models do not share an architecture")
    averaged = {}
    for key, value in first.items():
        if value.is_floating_point():
            mean = torch.stack([w[key].to(torch.float64) for w in weights]).mean(dim=0)
            averaged[key] = mean.to(value.dtype)
        else:
            averaged[key] = value.clone()
    return averaged
