"""The model registry: which trained models exist, where their weights are, and proof that the weights are intact.

Two registries are merged:

- shipped: ``Models.json`` beside this module, weights in the same folder (each file under 20 MB);
- user: ``$CSPINEAI_USER_MODELS`` or ``~/.cspineai/models``, with the same ``Models.json`` layout, where
  ``cspineai export`` registers a site's fine-tuned models.

``Models.json``::

    {"format": "cspineai-models-1",
     "models": [{"id": "pain-t1sag-ctbone", "task": "pain", "version": "1.0.0",
                 "file": "pain-t1sag-ctbone-1.0.0.pt", "sha256": "<64 hex digits>",
                 "inputs": ["T1_sag", "CT_bone"], "spacing": null, "working_size": null,
                 "training_data": "...", "training_command": "...", "metrics": {"auc": 0.81},
                 "card": "pain-t1sag-ctbone-1.0.0.md", "description": "...", "created": "2026-11-21"}]}

``file`` and ``card`` are relative to the registry folder. Loading a model checks the file's SHA-256 against the entry
and refuses a mismatch (:class:`~cspineai.errors.CSpineModelError` naming the file): a truncated download or an edited
file never runs silently. Model files are loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, atomic_write_text
from ..errors import CSpineInputError, CSpineModelError

log = logging.getLogger(__name__)

REGISTRY_FORMAT = "cspineai-models-1"
MODEL_FORMAT = "cspineai-model-1"
REGISTRY_FILE = "Models.json"
_REQUIRED = ("id", "task", "version", "file", "sha256")


@dataclasses.dataclass
class ModelEntry:
    """One registered model; ``folder`` is the registry folder its ``file`` and ``card`` are relative to."""

    id: str
    task: str
    version: str
    file: str
    sha256: str
    inputs: list[str] = dataclasses.field(default_factory=list)
    spacing: list[float] | None = None
    working_size: list[int] | None = None
    training_data: str = ""
    training_command: str = ""
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    card: str = ""
    description: str = ""
    created: str = ""
    source: str = "shipped"  # shipped | user (not stored in Models.json)
    folder: Path = Path(".")  # not stored either

    @property
    def path(self) -> Path:
        return self.folder / self.file

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("source")
        data.pop("folder")
        return data


def shipped_dir() -> Path:
    return Path(__file__).resolve().parent


def user_dir() -> Path:
    """The user registry folder: ``$CSPINEAI_USER_MODELS`` or ``~/.cspineai/models``."""
    return Path(os.environ.get("CSPINEAI_USER_MODELS") or Path.home() / ".cspineai" / "models")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.replace("-", ".").split("."))


def read_registry(folder: str | os.PathLike, source: str = "user") -> list[ModelEntry]:
    """Entries of ``folder/Models.json`` (an absent file is an empty registry); malformed entries are refused."""
    folder = Path(folder)
    file = folder / REGISTRY_FILE
    if not file.is_file():
        return []
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CSpineModelError(f"{file}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise CSpineModelError(f"{file}: expected an object with a 'models' list")
    known = {f.name for f in dataclasses.fields(ModelEntry)} - {"source", "folder"}
    entries = []
    for n, raw in enumerate(data["models"]):
        where = f"{file}, model {n + 1}"
        if not isinstance(raw, dict):
            raise CSpineModelError(f"{where}: expected an object")
        missing = [k for k in _REQUIRED if not raw.get(k)]
        if missing:
            raise CSpineModelError(f"{where}: missing {', '.join(missing)}")
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CSpineModelError(f"{where} ({raw['id']}): unknown field(s) {', '.join(unknown)}")
        entries.append(ModelEntry(**raw, source=source, folder=folder))
    return entries


def list_models(user_folder: str | os.PathLike | None = None) -> list[ModelEntry]:
    """Shipped and user models; a user entry with the id and version of a shipped one is ignored (with a warning)."""
    shipped = read_registry(shipped_dir(), "shipped")
    taken = {(e.id, e.version) for e in shipped}
    entries = list(shipped)
    for entry in read_registry(Path(user_folder) if user_folder else user_dir(), "user"):
        if (entry.id, entry.version) in taken:
            log.warning("user model %s %s has the id and version of a shipped model; using the shipped one",
                        entry.id, entry.version)
            continue
        entries.append(entry)
    return entries


def find_model(model_id: str, version: str | None = None, user_folder: str | os.PathLike | None = None) -> ModelEntry:
    """The entry ``model_id`` (its highest version unless ``version`` is given or ``model_id`` reads ``id@version``)."""
    if version is None and "@" in model_id:
        model_id, _, pinned = model_id.partition("@")
        version = pinned or None
    matches = [e for e in list_models(user_folder) if e.id == model_id and (version is None or e.version == version)]
    if not matches:
        known = ", ".join(sorted({e.id for e in list_models(user_folder)})) or "none"
        raise CSpineModelError(f"no registered model {model_id}" + (f" version {version}" if version else "")
                               + f" (registered: {known})")
    return max(matches, key=lambda e: _version_key(e.version))


def verify(entry: ModelEntry) -> Path:
    """The model file's path after checking that it exists and that its SHA-256 matches the registry entry."""
    path = entry.path
    if not path.is_file():
        raise CSpineModelError(f"{path}: model file of {entry.id} {entry.version} not found")
    actual = sha256_file(path)
    if actual.lower() != entry.sha256.lower():
        raise CSpineModelError(
            f"{path}: SHA-256 {actual[:16]}... does not match the registry's {entry.sha256[:16]}... for model "
            f"{entry.id} {entry.version}; the file is altered or incomplete. Download or export it again."
        )
    return path


def load_model_state(entry: ModelEntry) -> dict:
    """The verified model file's contents (weights, configuration, fitted settings), loaded with weights_only=True."""
    import torch

    path = verify(entry)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the hash matched, so this is a registry entry pointing at a non-model file
        raise CSpineModelError(f"{path}: not a loadable model file ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CSpineModelError(f"{path}: not a CSpineAI model file (needs model weights and config)")
    return state


def load_model(model_id: str, version: str | None = None, device: str = "cpu",
               user_folder: str | os.PathLike | None = None):
    """``(model in eval mode on device, entry, state)`` for a registered model, built by its task's factory."""
    from ..training.config import resolve_config
    from ..training.tasks import get_task

    entry = find_model(model_id, version, user_folder)
    state = load_model_state(entry)
    config = resolve_config(dict(state["config"]), f"model {entry.id} {entry.version}")
    model = get_task(config["task"]).build_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CSpineModelError(f"{entry.path}: weights do not fit the {config['task']} model ({error})") from None
    return model.to(device).eval(), entry, state


def initialisation_text(config: dict, init: dict | None = None) -> str:
    """How the weights started, in words: random, or fine-tuned from a registered model / file with its hash.

    ``init`` is what the training checkpoint recorded (:attr:`cspineai.training.init_from.StartingModel.record`);
    without it the configuration's ``init_from`` is all that is known.
    """
    if init:
        what = (f"registered model `{init['model']}` {init['version']}" if init.get("model")
                else f"`{init.get('file') or init.get('init_from')}`")
        return f"fine-tuned from {what} (SHA-256 `{init.get('sha256', '')[:16]}...`)"
    if config.get("init_from"):
        return f"fine-tuned from `{config['init_from']}`"
    return "random (trained from scratch)"


def model_card(entry: ModelEntry, config: dict, history_rows: int, init: dict | None = None,
               averaged: list[dict] | None = None) -> str:
    """Markdown model card: what the model does, its inputs, how it was trained (and from which starting weights) and
    how well it scored; ``init`` as in :func:`initialisation_text`, ``averaged`` the records of the models whose
    weights were averaged (:func:`export_model`)."""
    metrics = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                        for k, v in entry.metrics.items()) or "| (none) | |"
    if averaged:
        names = "; ".join((f"registered model `{a['model']}` {a['version']}" if a.get("model") else f"`{a['file']}`")
                          + f" (SHA-256 `{a['sha256'][:16]}...`)" for a in averaged)
        weights_line = f"\n- Weights: the uniform average of {names}; not validated at export (no figures below)"
    else:
        weights_line = ""
    optim = config.get("optim", {})
    return f"""# {entry.id} {entry.version}

{entry.description or "Model registered with `cspineai export`."}

- Task: `{entry.task}`
- Inputs: {", ".join(entry.inputs) or "see the task"}; spacing {entry.spacing or "as acquired"};
  working size {entry.working_size or "as configured"}
- File: `{entry.file}` (SHA-256 `{entry.sha256}`)
- Created: {entry.created}

## Training

- Data: {entry.training_data or "not stated"}
- Command: `{entry.training_command or "not stated"}`
- Initialisation: {initialisation_text(config, init)}{weights_line}
- Epochs run: {history_rows}; optimiser AdamW, lr {optim.get("lr")}, batch {config.get("data", {}).get("batch_size")},
  validation fold {config.get("data", {}).get("fold")}, seed {config.get("seed")}

## Validation figures (epoch of the exported weights)

| figure | value |
|---|---|
{metrics}

## Intended use and limits

Research use. Check the figures above on your own data (`cspineai evaluate --model {entry.id} --manifest ...`)
before relying on the model; figures from one site do not transfer to another by default.
"""


def export_model(checkpoint: str | os.PathLike, model_id: str, version: str = "1.0.0",
                 registry_dir: str | os.PathLike | None = None, description: str = "", training_data: str = "",
                 training_command: str = "", inputs: list[str] | None = None, spacing: list[float] | None = None,
                 working_size: list[int] | None = None, overwrite: bool = False,
                 average_with: Sequence[str] = ()) -> ModelEntry:
    """Register a training checkpoint: write ``<id>-<version>.pt`` (deployable weights, the configuration and the
    validation figures), its model card ``.md`` and the ``Models.json`` entry, each atomically.

    The weights are the EMA average when the run kept one. ``inputs`` default to the series the task requires.
    ``average_with`` (checkpoints or registered ids, as ``init_from`` names them) registers instead the uniform mean of
    the checkpoint's weights and theirs (:func:`cspineai.training.checkpoint.average_weights`): same task and network.
    The mean was validated by nobody, so it carries no validation figures; a task that takes a setting from them (the
    classifier's operating threshold) is refused, because that setting belongs to other weights.
    """
    import torch

    from ..series import SERIES
    from ..training.checkpoint import average_weights, fitted_figures, load_checkpoint, model_weights
    from ..training.init_from import read_starting_model
    from ..training.tasks import get_task

    if not model_id or not all(ch.isalnum() or ch in "-_." for ch in model_id):
        raise CSpineInputError("--id", f"{model_id!r}: use letters, digits, '-', '_' and '.' only")
    folder = Path(registry_dir) if registry_dir else user_dir()
    if folder.resolve() == shipped_dir():
        log.info("exporting into the shipped registry (%s)", folder)
    state = load_checkpoint(checkpoint)
    config = state["config"]
    task = get_task(config["task"])
    fitted = fitted_figures(state)
    entries = read_registry(folder, "user")
    if any(e.id == model_id and e.version == version for e in entries) and not overwrite:
        raise CSpineInputError(folder / REGISTRY_FILE, f"already lists {model_id} {version}; choose another version "
                                                       "or allow overwriting")
    weights, averaged = model_weights(state), None
    if average_with:
        if "threshold" in fitted:
            raise CSpineInputError("--average-with", f"{checkpoint} is a {task.name} model with an operating threshold "
                                   "chosen on validation data for its own weights; an average would need its own")
        ingredients = [read_starting_model(spec, task.name) for spec in average_with]
        for ingredient in ingredients:
            if ingredient.config.get("model") != config.get("model"):
                raise CSpineInputError("--average-with", f"{ingredient.label} has another network "
                                       f"({ingredient.config.get('model')}) than {checkpoint} ({config.get('model')})")
        weights = average_weights([weights, *(i.weights for i in ingredients)],
                                  [str(checkpoint), *(i.label for i in ingredients)])
        averaged = [{"file": str(checkpoint), "sha256": sha256_file(checkpoint)}, *(i.record for i in ingredients)]
        fitted = {}
    stem = f"{model_id}-{version}"
    file = folder / f"{stem}.pt"
    payload = {"format": MODEL_FORMAT, "task": task.name, "model": weights, "config": config,
               "fitted": fitted, "epoch": int(state.get("epoch") or 0), "init": state.get("init")}
    if averaged:
        payload["averaged"] = averaged
    with atomic_path(file) as tmp:
        torch.save(payload, tmp)
    entry = ModelEntry(
        id=model_id, task=task.name, version=version, file=file.name, sha256=sha256_file(file),
        inputs=list(inputs) if inputs else [c for c in task.required_columns if c in SERIES],
        spacing=spacing, working_size=working_size, training_data=training_data,
        training_command=training_command, metrics={k: v for k, v in fitted.items() if isinstance(v, int | float)},
        card=f"{stem}.md", description=description, created=datetime.date.today().isoformat(),
        source="user", folder=folder,
    )
    atomic_write_text(folder / entry.card,
                      model_card(entry, config, int(state.get("epoch") or 0), state.get("init"), averaged))
    kept = [e for e in entries if not (e.id == model_id and e.version == version)]
    write_registry(folder, [*kept, entry])
    return entry


def write_registry(folder: str | os.PathLike, entries: list[ModelEntry]) -> Path:
    """Write ``folder/Models.json`` atomically."""
    data = {"format": REGISTRY_FORMAT, "models": [e.to_json() for e in entries]}
    return atomic_write_text(Path(folder) / REGISTRY_FILE, json.dumps(data, indent=2) + "\n")
