"""Training configuration: YAML on disk, validated against a schema of defaults, overridable with ``--set a.b=value``.

A configuration is a nested dict. The engine owns every section except ``model`` and ``task_options``, whose keys and
defaults the task declares (:attr:`cspineai.training.tasks.Task.model_defaults` / ``options_defaults``). Validation is
strict: an unknown key or a value of the wrong type raises :class:`~cspineai.errors.CSpineInputError` naming the file
and the dotted key (``optim.lr``), before anything is read or trained. Every run writes its resolved configuration
(defaults filled in, overrides applied) as ``config.yaml`` next to its outputs.

With ``init_from`` (fine-tuning, :mod:`cspineai.training.init_from`) the ``model`` section is the starting model's:
:func:`load_config` replaces the configuration file's with it and applies ``--set model.<key>`` overrides on top. So
do the task options the weights fix (:attr:`cspineai.training.tasks.Task.weight_options`, e.g. the segmentation
network's slice context), under ``--set task_options.<key>`` overrides.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import CSpineInputError

#: The engine's sections and their defaults; ``None`` defaults accept a value of any scalar type.
ENGINE_DEFAULTS: dict[str, Any] = {
    "task": "toy",  # module cspineai.tasks.<task> registers the task
    "seed": 0,
    "manifest": "",  # cohort CSV (cspineai.manifest); relative paths are relative to the config file
    "init_from": None,  # starting weights: registry id (id or id@version) or .pt path (cspineai.training.init_from)
    "output_dir": "runs/run",  # relative paths are relative to the working directory
    "device": "auto",  # auto | cpu | cuda | cuda:N (under torchrun each rank takes cuda:LOCAL_RANK)
    "deterministic": True,  # deterministic algorithms; bitwise-reproducible resume on CPU
    "data": {
        "fold": 0,  # validation fold; -1 trains on all non-test cases without validation
        "folds": 5,  # used when the manifest has no fold column (patient-level, label-stratified split)
        "cache": "none",  # none | memory (CacheDataset) | disk (PersistentDataset)
        "cache_dir": "",  # for cache: disk; default <output_dir>/cache
        "batch_size": 4,
        "val_batch_size": 0,  # 0: same as batch_size
        "val_every": 1,  # validate every N epochs and after the last one (patience then counts validations)
        "num_workers": 0,
    },
    "optim": {
        "epochs": 100,
        "lr": 1.0e-4,
        "weight_decay": 1.0e-2,  # AdamW
        "step_size": 1,  # step decay every step_size epochs ...
        "gamma": 0.9,  # ... by this factor (methods.md section 2: x0.9 per epoch)
        "warmup_epochs": 0,  # linear warm-up from lr/(warmup_epochs+1)
        "grad_clip": 0.0,  # max gradient norm; 0 disables clipping
        "accumulate": 1,  # gradient accumulation: optimiser step every N batches
        "amp": "none",  # none | bf16 | fp16 (mixed precision, CUDA only; ignored on CPU)
        "ema": 0.0,  # exponential moving average decay of the weights (e.g. 0.999); 0 disables
    },
    "early_stopping": {
        "patience": 0,  # epochs without improvement of the task's monitored metric; 0 disables
        "min_delta": 0.0,
    },
    "log": {
        "every_steps": 10,  # plain progress lines (non-TTY) every N steps
        "tensorboard": True,  # only when the tensorboard package is installed
    },
    "model": {},
    "task_options": {},
}

#: Sections whose keys belong to the task, validated against the task's declared defaults.
TASK_SECTIONS = ("model", "task_options")
_CHOICES = {
    "data.cache": ("none", "memory", "disk"),
    "optim.amp": ("none", "bf16", "fp16"),
}


def _check(defaults: dict, values: dict, source: str, prefix: str = "") -> dict:
    """Merge ``values`` into a copy of ``defaults``, refusing unknown keys and values of the wrong type."""
    if not isinstance(values, dict):
        raise CSpineInputError(source, f"{prefix.rstrip('.') or 'the configuration'} must be a mapping")
    merged = copy.deepcopy(defaults)
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise CSpineInputError(source, f"unknown configuration key {dotted!r} (known keys here: {known})")
        default = defaults[key]
        if isinstance(default, dict) and default:
            merged[key] = _check(default, value if value is not None else {}, source, f"{dotted}.")
        else:
            merged[key] = _coerce(default, value, source, dotted)
        choices = _CHOICES.get(dotted)
        if choices and merged[key] not in choices:
            raise CSpineInputError(source, f"{dotted} must be one of {', '.join(choices)}, not {merged[key]!r}")
    return merged


def _coerce(default: Any, value: Any, source: str, dotted: str) -> Any:
    if default is None or value is None and isinstance(default, str):
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, list | tuple):
        if isinstance(value, list | tuple):
            return list(value)
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return dict(value)
    else:
        return value
    raise CSpineInputError(source, f"{dotted} must be {type(default).__name__}, not {value!r}")


def parse_overrides(items: list[str] | None) -> dict:
    """``["optim.lr=1e-3", "data.fold=2"]`` -> nested dict; values are parsed as YAML scalars."""
    nested: dict = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise CSpineInputError("--set", f"{item!r} is not key=value")
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CSpineInputError("--set", f"{key} conflicts with another override")
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
    return nested


def deep_update(base: dict, update: dict) -> dict:
    """Copy of ``base`` with ``update`` merged in recursively."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CSpineInputError(path, "configuration file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise CSpineInputError(path, f"not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise CSpineInputError(path, "the configuration must be a YAML mapping")
    return data


def resolve_config(raw: dict, source: str = "configuration", base_dir: str | os.PathLike | None = None) -> dict:
    """Validate ``raw`` (engine sections and the task's sections) and return the complete configuration.

    The task module is imported here (``task: pain`` -> ``cspineai.tasks.pain``) to learn its ``model`` and
    ``task_options`` keys. A relative ``manifest`` is made absolute against ``base_dir`` (the config file's folder).
    """
    from .tasks import get_task

    engine_raw = {k: v for k, v in raw.items() if k not in TASK_SECTIONS}
    config = _check({k: v for k, v in ENGINE_DEFAULTS.items() if k not in TASK_SECTIONS}, engine_raw, source)
    task = get_task(config["task"])
    config["model"] = _check(dict(task.model_defaults), raw.get("model") or {}, source, "model.")
    config["task_options"] = _check(dict(task.options_defaults), raw.get("task_options") or {}, source, "task_options.")
    if config["manifest"] and base_dir is not None and not os.path.isabs(config["manifest"]):
        config["manifest"] = str((Path(base_dir) / config["manifest"]).resolve())
    config["init_from"] = _init_from(config["init_from"], source)
    for key in ("batch_size", "val_every", "accumulate", "epochs", "step_size"):
        section = "data" if key in ("batch_size", "val_every") else "optim"
        if config[section][key] < 1:
            raise CSpineInputError(source, f"{section}.{key} must be at least 1")
    if config["data"]["num_workers"] < 0:
        raise CSpineInputError(source, "data.num_workers must not be negative")
    return config


def _init_from(value: Any, source: str) -> str | None:
    """``init_from`` as a registry id or an absolute path (relative paths: to the working directory), or None."""
    from .init_from import is_path

    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CSpineInputError(source, f"init_from must be a registered model id (id or id@version) or the path of a "
                                       f".pt file, not {value!r}")
    return str(Path(value).expanduser().resolve()) if is_path(value) else value


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None, resume: bool = False) -> dict:
    """Read a YAML config (or start from the defaults when ``path`` is None), apply ``--set`` overrides, validate.

    With ``init_from`` the ``model`` section comes from the starting model (weights only fit the architecture they
    were trained in), then ``--set model.<key>`` overrides apply, e.g. a different dropout. When ``resume`` continues a
    run, its saved ``config.yaml`` already holds that section and the starting model is not read again.
    """
    raw = read_yaml(path) if path else {}
    sets = parse_overrides(overrides)
    raw = deep_update(raw, sets)
    source = str(path) if path else "configuration"
    base_dir = Path(path).resolve().parent if path else Path.cwd()
    config = resolve_config(raw, source, base_dir)  # the configuration file's own keys are checked all the same
    if config["init_from"]:
        from .init_from import starting_config
        from .tasks import get_task

        saved = Path(config["output_dir"]) / "config.yaml"
        start = (read_yaml(saved) if resume and saved.is_file()
                 else starting_config(config["init_from"], config["task"]))
        fixed = {k: v for k, v in (start.get("task_options") or {}).items()
                 if k in get_task(config["task"]).weight_options}
        options = deep_update(deep_update(raw.get("task_options") or {}, fixed), sets.get("task_options") or {})
        raw = {**raw, "init_from": config["init_from"], "task_options": options,
               "model": deep_update(start.get("model") or {}, sets.get("model") or {})}
        config = resolve_config(raw, source, base_dir)
    return config


def dump_config(config: dict) -> str:
    """The configuration as YAML text (keys in the schema's order)."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configurations."""
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        dotted = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{dotted}.")
        elif va != vb:
            out.append(dotted)
    return out
