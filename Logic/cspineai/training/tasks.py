"""The task protocol: what a model issue (pain classifier, cord segmentation, registration) gives the training engine.

The loop in :mod:`cspineai.training.loop` never knows which task it runs. A task is a subclass of :class:`Task` in the
module ``cspineai.tasks.<name>`` that calls :func:`register_task` at import; ``task: <name>`` in a config imports it.

Guide for task authors
----------------------
Write ``Logic/cspineai/tasks/<name>.py``::

    class PainTask(Task):
        name = "pain"
        required_columns = ("T1_sag", "CT_bone", "label")   # checked (files too) before training starts
        model_defaults = {"variant": "abpdc", "width": 16}  # the config's `model:` section, validated against these
        options_defaults = {"mri": "T1_sag", "ct": "CT_bone"}  # the config's `task_options:` section
        monitor, monitor_mode = "auc", "max"                # early stopping and best.pt follow this metric

        def build_model(self, config): ...                  # -> torch.nn.Module (CPU; the engine moves it)
        def data_items(self, cases, config): ...            # list[Case] -> list[dict] (paths, labels)
        def transforms(self, config, train): ...            # MONAI Compose; random transforms only when train
        def step(self, model, batch, config): ...           # -> (loss scalar, outputs dict of tensors)
        def compute_metrics(self, outputs, config, fitted=None): ...  # -> dict[str, float]

    register_task(PainTask())

Contracts:

- ``data_items`` returns one dict per case; the engine wraps it with the transforms in a MONAI ``Dataset``,
  ``CacheDataset`` (``data.cache: memory``) or ``PersistentDataset`` (``disk``). Deterministic transforms come first in
  :meth:`Task.transforms` so the caches hold their result; random ones (``Randomizable``) are re-seeded by the engine at
  every epoch from ``(seed, epoch)``, which makes resumed runs repeat an uninterrupted one.
- ``step`` receives a collated batch already moved to the device (tensors in dicts/lists moved recursively) and the
  model, which is wrapped in ``DistributedDataParallel`` under ``torchrun``: call it, never ``model.module``.
  It runs under autocast when mixed precision is on. It returns the scalar loss (mean over the batch; the engine does
  backward, accumulation, clipping, scaling) and a dict of per-sample tensors with a leading batch axis (``"score"``
  (B,), ``"label"`` (B,), ``"case_id"`` list) that :meth:`compute_metrics` will need. ``model.training`` tells whether
  this is a training or a validation step.
- ``compute_metrics`` receives the ``outputs`` of all validation steps concatenated along the batch axis (tensors on the
  CPU, lists extended) and returns scalar figures. ``fitted`` is ``None`` on validation data, where the task may choose
  data-dependent settings (a Youden threshold) and return them among the figures; when scoring test data,
  ``cspineai evaluate`` passes the figures of the checkpoint's validation so that the same settings are re-used (never
  chosen on test data). The engine adds ``loss`` (mean step loss) itself.
- Optional hooks: :meth:`Task.on_epoch_start` (loss-weight schedules), :meth:`Task.case_rows` (per-case CSV rows of
  ``cspineai evaluate``), :meth:`Task.collate` (a custom ``collate_fn``).
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ..errors import CSpineInputError

_REGISTRY: dict[str, Task] = {}


class Task(abc.ABC):
    """Base class of a training task; see the module docstring for the contract of each method."""

    name: ClassVar[str] = ""
    #: Manifest columns every case must have (``"label"``, series names ...); files are checked before training.
    required_columns: ClassVar[tuple[str, ...]] = ()
    #: Keys and defaults of the config's ``model:`` section (the factory's arguments).
    model_defaults: ClassVar[dict[str, Any]] = {}
    #: Keys and defaults of the config's ``task_options:`` section (series choice, loss weights ...).
    options_defaults: ClassVar[dict[str, Any]] = {}
    #: Validation figure that drives early stopping and ``best.pt`` (``"loss"`` is always available), and its direction.
    monitor: ClassVar[str] = "loss"
    monitor_mode: ClassVar[str] = "min"
    #: ``task_options`` keys the trained weights fix (e.g. a network's input channels): with ``init_from`` they follow
    #: the starting model, as the ``model`` section does, unless ``--set task_options.<key>`` says otherwise.
    weight_options: ClassVar[tuple[str, ...]] = ()
    #: Label column used to stratify computed folds (``None``: unstratified).
    stratify_by: ClassVar[str | None] = "label"

    @abc.abstractmethod
    def build_model(self, config: dict):
        """The network, from the config's ``model`` section."""

    @abc.abstractmethod
    def data_items(self, cases: Sequence, config: dict) -> list[dict]:
        """One dict per training sample (paths and labels) from the manifest's cases."""

    @abc.abstractmethod
    def transforms(self, config: dict, train: bool) -> Callable:
        """The MONAI transform chain for training (``train=True``) or validation."""

    @abc.abstractmethod
    def step(self, model, batch: dict, config: dict) -> tuple[Any, dict]:
        """``(loss, outputs)`` for one batch; ``outputs`` feed :meth:`compute_metrics`."""

    def compute_metrics(self, outputs: dict, config: dict, fitted: dict | None = None) -> dict[str, float]:
        return {}

    def on_epoch_start(self, epoch: int, config: dict) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Called on every rank before epoch ``epoch`` (0-based) trains."""

    def starting_weights(self, model, weights: dict, config: dict) -> dict:
        """The weights of ``init_from`` adapted to this run's ``model`` where the task knows an exact mapping (e.g. a
        wider input); default: as they are. :func:`cspineai.training.init_from.initialise_weights` then loads them
        key for key and shape for shape."""
        return weights

    def case_rows(self, outputs: dict, config: dict) -> list[dict]:
        """Per-case rows for ``cspineai evaluate --predictions`` (default: none)."""
        return []

    def reference_figures(self, cases: Sequence) -> dict[str, float]:
        """Figures that bound what any model can reach on ``cases`` (e.g. a synthetic cohort's Bayes-optimal
        accuracy), printed by ``cspineai evaluate`` beside the model's; default: none."""
        return {}

    def collate(self):
        """``collate_fn`` for the data loaders (default: MONAI's ``list_data_collate``)."""
        from monai.data import list_data_collate

        return list_data_collate


def register_task(task: Task) -> Task:
    """Make ``task`` available under ``task.name`` (called by the task module at import)."""
    if not task.name:
        raise ValueError("a task needs a name")
    if task.monitor_mode not in ("min", "max"):
        raise ValueError(f"task {task.name}: monitor_mode must be 'min' or 'max'")
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task called ``name``, importing ``cspineai.tasks.<name>`` on first use."""
    if name not in _REGISTRY:
        if not name.isidentifier():
            raise CSpineInputError("task", f"{name!r} is not a task name")
        try:
            importlib.import_module(f"cspineai.tasks.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"cspineai.tasks.{name}":
                raise
            raise CSpineInputError("task", f"unknown task {name!r} (no module cspineai.tasks.{name})") from None
    if name not in _REGISTRY:
        raise CSpineInputError("task", f"module cspineai.tasks.{name} did not register a task called {name!r}")
    return _REGISTRY[name]


def registered_tasks() -> list[str]:
    return sorted(_REGISTRY)
