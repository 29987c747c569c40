"""One case through every model: CT->MRI registration, neck-pain prediction, saliency, cord segmentation, morphometry.

:func:`run_case` is the single entry point of the Slicer module (through ``cspineai run`` in a child process), the
command line, the demo, the benchmark and the self-test. It works in three phases:

1. **Plan** (no image is read, nothing is computed): the steps are checked, the models are resolved (registry ids are
   loaded and SHA-256 checked, networks given directly are used as they are), and every series that a chosen step needs
   is checked to be present. A missing series raises :class:`~cspineai.errors.CSpineInputError` naming the series and
   the step that needs it, before any work.
2. **Read**: every needed series is read and validated (:func:`cspineai.io.read_volume`), or taken as given
   (:class:`~cspineai.volume.Volume`, or a Slicer volume node converted by the scene layer).
3. **Run** the steps in the order of :data:`STEPS`, reporting progress as ``(step, fraction of the whole job, message)``
   and checking the cancel token between steps (:class:`~cspineai.errors.CSpineCancelled`).

:func:`write_results` then writes the results folder atomically (all or nothing): a cancelled or failed run leaves no
folder. The folder holds no patient identifier: volumes are written from arrays and geometry only (no DICOM header is
carried), ``report.json`` names series, not files.

Step -> series (defaults; see :func:`plan_case`):

- ``register``: CT_bone (else CT_tissue) moving onto T1_sag (else T2_sag) fixed.
- ``predict``, ``saliency``: the two series the classifier was trained on (its configuration's ``series``).
- ``segment``: the first MRI series the segmentation model lists among T2_sag, T1_sag, T2_tra.
- ``measure``: the label map of ``segment`` (so ``measure`` needs ``segment``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import prediction, registration, segmentation
from .errors import CSpineInputError, CSpineModelError
from .progress import CancelToken, ProgressCallback, no_progress
from .series import SERIES
from .volume import Volume

#: Pipeline steps in execution order (``cspineai run --steps``; mirrored by the Slicer module's ``Logic.STEPS``).
STEPS = ("register", "predict", "saliency", "segment", "measure")
#: Model roles (``cspineai run --model ROLE=ID``).
MODEL_ROLES = ("registration", "classifier", "segmentation")
#: The role whose model each step runs (``measure`` runs no network).
STEP_ROLES = {"register": "registration", "predict": "classifier", "saliency": "classifier", "segment": "segmentation"}
#: Registry ids of the shipped models, used when no model is chosen for a role.
DEFAULT_MODEL_IDS = {
    "registration": registration.DEFAULT_MODEL_ID,
    "classifier": prediction.DEFAULT_MODEL_ID,
    "segmentation": segmentation.DEFAULT_MODEL_ID,
}
#: Registry ``task`` of each role's models (used when the default id is not registered, see :func:`default_model_id`).
ROLE_TASKS = {"registration": "registration", "classifier": "pain", "segmentation": "cordseg"}
#: Registration methods that need no network (``--model registration=bspline``): the SimpleITK baseline, or none.
MODEL_FREE_REGISTRATION = ("bspline", "identity")
#: Preference order of the series each step can use.
REGISTRATION_CT = ("CT_bone", "CT_tissue")
REGISTRATION_MRI = ("T1_sag", "T2_sag")
SEGMENTATION_MRI = ("T2_sag", "T1_sag", "T2_tra")
#: Operating threshold used when a classifier carries none (said so in the report).
DEFAULT_THRESHOLD = 0.5
#: Relative cost of each step on a CPU, so that the progress fraction moves at a roughly even pace.
STEP_WEIGHTS = {"register": 3.0, "predict": 1.0, "saliency": 2.0, "segment": 3.0, "measure": 1.0}
#: Files of the results folder (names the Slicer module and the tests rely on).
REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
REPORT_PDF = "report.pdf"
#: The bundled synthetic case (demo, self-test, benchmark): phantom seed and protocol preset. Generated on demand,
#: deterministically (a few seconds), rather than shipped as files: the phantom is part of the package anyway.
DEMO_SEED = 0
DEMO_RESOLUTION = "coarse"


@dataclasses.dataclass
class PipelineModel:
    """A network ready to run, with what the report says about it.

    Attributes:
        role: ``"registration"``, ``"classifier"`` or ``"segmentation"``.
        module: the ``torch.nn.Module`` (None for the model-free registration methods).
        id, version: registry id and version (``"given"`` for a network passed in directly).
        sha256: SHA-256 of the model file (empty for a network passed in directly: it has no file).
        threshold: the classifier's operating threshold on the pain probability (fitted on validation data).
        calibration: how far the probability can be read as a frequency (from the model card, else a caution).
        inputs: series the model was trained on (registry ``inputs``), in order of preference.
        options: role-specific settings: ``method`` (registration), ``config`` (segmentation: a
            :class:`~cspineai.segmentation.SegmentationConfig`).
    """

    role: str
    module: Any
    id: str = "given"
    version: str = ""
    sha256: str = ""
    threshold: float | None = None
    calibration: str = ""
    inputs: tuple[str, ...] = ()
    options: dict = dataclasses.field(default_factory=dict)

    def describe(self) -> dict:
        """The report's record: id, version, SHA-256; for the registration the method, for the segmentation the
        weight of its cord/CSF intensity refinement (post-processing that changes the result of the same weights)."""
        record = {"id": self.id, "version": self.version, "sha256": self.sha256}
        if "method" in self.options:
            record["method"] = self.options["method"]
        if hasattr(self.options.get("config"), "intensity_weight"):
            record["intensity_weight"] = self.options["config"].intensity_weight
        return record


@dataclasses.dataclass
class CaseInputs:
    """The series of one case: each a file path (NIfTI/NRRD/MHA or DICOM folder), a :class:`Volume`, or a Slicer
    volume node; None when absent."""

    CT_bone: Any = None
    CT_tissue: Any = None
    T1_sag: Any = None
    T2_sag: Any = None
    T2_tra: Any = None

    @classmethod
    def from_mapping(cls, series: Mapping[str, Any]) -> CaseInputs:
        unknown = sorted(set(series) - set(SERIES))
        if unknown:
            raise CSpineInputError("inputs", f"unknown series {unknown}; expected some of {list(SERIES)}")
        return cls(**dict(series))

    def present(self) -> tuple[str, ...]:
        return tuple(name for name in SERIES if getattr(self, name) is not None)

    def read(self, name: str) -> Volume:
        """The series as a validated :class:`Volume` with ``modality`` set to the series name."""
        value = getattr(self, name)
        if value is None:
            raise CSpineInputError(f"{name} series", "was not given")
        if isinstance(value, Volume):
            return value if value.modality == name else dataclasses.replace(value, modality=name)
        if isinstance(value, str | os.PathLike):
            from .io import read_volume

            return read_volume(value, modality=name)
        if hasattr(value, "GetImageData"):  # a Slicer volume node; only the scene layer touches MRML
            from .scene import node_to_volume

            return node_to_volume(value, modality=name, source=f"{name} node")
        raise CSpineInputError(f"{name} series", f"expected a file path, a Volume or a volume node, not {type(value)}")


@dataclasses.dataclass
class CaseResult:
    """Everything :func:`run_case` computed; :func:`write_results` turns it into the results folder.

    Attributes:
        series: the series read, by name (only those a step used).
        steps: the steps run, in order.
        plan: series used by each step (``{"register": ["CT_bone", "T1_sag"], ...}``).
        registration: :class:`~cspineai.registration.RegistrationResult` (field on the MRI grid), or None.
        prediction: :class:`~cspineai.prediction.PainPrediction`, or None.
        saliency: heatmap per classifier series, float32 in [0, 1] on that series' grid.
        segmentation: label map (:data:`cspineai.series.LABELS` values) on ``segmentation_series``' grid, or None.
        segmentation_series: the MRI series segmented.
        morphometry: :class:`~cspineai.morphometry.Morphometry`, or None.
        models: the models used, by role.
        timings: wall-clock seconds per step, plus ``"read"`` and ``"total"``.
        device: the torch device the networks ran on.
        notes: remarks for the reader (device fallback, default threshold...).
    """

    series: dict[str, Volume]
    steps: tuple[str, ...]
    plan: dict[str, list[str]]
    registration: Any = None
    prediction: Any = None
    saliency: dict[str, Volume] = dataclasses.field(default_factory=dict)
    segmentation: Volume | None = None
    segmentation_series: str | None = None
    morphometry: Any = None
    models: dict[str, PipelineModel] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    device: str = "cpu"
    notes: list[str] = dataclasses.field(default_factory=list)
    saliency_method: str = ""  # the method that made ``saliency`` (set by run_case)

    @property
    def threshold(self) -> float:
        model = self.models.get("classifier")
        return float(model.threshold) if model is not None and model.threshold is not None else DEFAULT_THRESHOLD


# --- devices and models ---------------------------------------------------------------------------------------------


def resolve_device(requested: str = "auto") -> tuple[str, str]:
    """``(device, note)``: ``auto`` takes CUDA when available, else the CPU with a note saying so.

    Raises:
        CSpineInputError: ``cuda`` requested but not available, or an unknown device name.
    """
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise CSpineInputError("--device", f"must be auto, cpu or cuda, not {requested!r}")
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise CSpineInputError("--device", "CUDA was requested but no CUDA device is available; choose cpu or auto")
    if requested == "auto":
        return ("cuda", "") if available else ("cpu", "no CUDA device available: running on the CPU")
    return requested, ""


def _classifier_threshold(state: Mapping, entry) -> float | None:
    fitted = state.get("fitted") or {}
    for source in (fitted, entry.metrics or {}):
        if isinstance(source.get("threshold"), int | float):
            return float(source["threshold"])
    return None


def load_registry_model(role: str, model_id: str, device: str = "cpu") -> PipelineModel:
    """A registered model for ``role`` (SHA-256 checked by the registry); registration also takes ``bspline`` and
    ``identity``, which need no network.

    Raises:
        CSpineModelError: the id is not registered (the message lists the registered ids), the file is altered, or the
            model was trained for another task.
    """
    if role not in MODEL_ROLES:
        raise ValueError(f"unknown model role {role!r}; expected one of {list(MODEL_ROLES)}")
    if role == "registration" and model_id in MODEL_FREE_REGISTRATION:
        return PipelineModel(role, None, id=model_id, options={"method": model_id})
    from .models.registry import load_model

    module, entry, state = load_model(model_id, device=device)
    config = dict(state.get("config") or {})
    task = config.get("task", entry.task)
    model = PipelineModel(role, module, entry.id, entry.version, entry.sha256, inputs=tuple(entry.inputs or ()))
    if role == "registration":
        model.options["method"] = "fpran"
    elif role == "classifier":
        if not hasattr(module, "series"):
            raise CSpineModelError(f"model {entry.id} ({task}) is not a two-branch pain classifier")
        model.threshold = _classifier_threshold(state, entry)
        model.calibration = str(state.get("calibration") or (state.get("fitted") or {}).get("calibration") or "")
        model.inputs = tuple(module.series)
    elif role == "segmentation":
        from .training.config import resolve_config
        from .training.tasks import get_task

        if task != "cordseg":
            raise CSpineModelError(f"model {entry.id} was trained for task {task!r}, not cord segmentation")
        resolved = resolve_config(config, f"model {entry.id} {entry.version}")
        model.options["config"] = get_task("cordseg").segmentation_config(resolved)
    return model


def default_model_id(role: str) -> str:
    """The model a role uses when none is chosen: :data:`DEFAULT_MODEL_IDS` when registered, else the one shipped
    model of the role's task (:data:`ROLE_TASKS`), else the default id (whose absence is then reported)."""
    from .models.registry import list_models

    entries = list_models()
    if any(e.id == DEFAULT_MODEL_IDS[role] for e in entries):
        return DEFAULT_MODEL_IDS[role]
    shipped = sorted({e.id for e in entries if e.task == ROLE_TASKS[role] and e.source == "shipped"})
    return shipped[0] if len(shipped) == 1 else DEFAULT_MODEL_IDS[role]


def _require_registered(chosen: Mapping[str, Any]) -> None:
    """One :class:`CSpineModelError` naming every chosen registry id that is not registered (before loading any)."""
    from .models.registry import find_model

    missing = []
    for role, value in chosen.items():
        if not isinstance(value, str) or (role == "registration" and value in MODEL_FREE_REGISTRATION):
            continue
        try:
            find_model(value)
        except CSpineModelError:
            missing.append(f"{role} model {value!r}")
    if missing:
        from .models.registry import list_models

        known = ", ".join(sorted({e.id for e in list_models()})) or "none"
        raise CSpineModelError(f"not registered: {'; '.join(missing)} (registered: {known}). Install the shipped "
                               "models, add a fine-tuned one, or choose one with --model ROLE=ID")


def declared_models(models: Mapping[str, Any] | None, roles: Sequence[str]) -> dict[str, PipelineModel]:
    """Per role, a :class:`PipelineModel` without a network carrying the id and the series the model declares (the
    registry entry's ``inputs``; a network's ``series``): enough to check a case's series without loading anything.
    Ids that are not registered raise :class:`CSpineModelError` here."""
    from .models.registry import find_model

    models = dict(models or {})
    chosen = {role: models.get(role) or default_model_id(role) for role in roles}
    _require_registered(chosen)
    declared = {}
    for role, value in chosen.items():
        if isinstance(value, PipelineModel):
            declared[role] = value
        elif isinstance(value, str):
            free = role == "registration" and value in MODEL_FREE_REGISTRATION
            inputs = () if free else tuple(find_model(value).inputs or ())
            declared[role] = PipelineModel(role, None, value, inputs=inputs)
        else:
            declared[role] = PipelineModel(role, None, inputs=tuple(getattr(value, "series", ())))
    return declared


def resolve_models(
    models: Mapping[str, Any] | None, roles: Sequence[str], device: str = "cpu"
) -> dict[str, PipelineModel]:
    """One :class:`PipelineModel` per role in ``roles``.

    ``models[role]`` may be a :class:`PipelineModel`, a registry id (str), a ``torch.nn.Module`` (used as given, id
    ``"given"``), or absent (the shipped default, :func:`default_model_id`). Every registry id is checked to be
    registered before any model is loaded.
    """
    models = dict(models or {})
    unknown = sorted(set(models) - set(MODEL_ROLES))
    if unknown:
        raise ValueError(f"unknown model roles {unknown}; expected some of {list(MODEL_ROLES)}")
    chosen = {role: models.get(role) or default_model_id(role) for role in roles}
    _require_registered(chosen)
    resolved = {}
    for role in roles:
        value = chosen[role]
        if isinstance(value, PipelineModel):
            model = value
        elif isinstance(value, str):
            model = load_registry_model(role, value, device)
        else:
            model = PipelineModel(role, value, options={"method": "fpran"} if role == "registration" else {})
            if role == "classifier":
                model.inputs = tuple(getattr(value, "series", ()))
        if model.module is not None and hasattr(model.module, "to"):
            model.module = model.module.to(device).eval()
        resolved[role] = model
    return resolved


# --- plan -----------------------------------------------------------------------------------------------------------


def _first_present(candidates: Sequence[str], present: Sequence[str]) -> str | None:
    return next((name for name in candidates if name in present), None)


def _missing(step: str, what: str, candidates: Sequence[str]) -> CSpineInputError:
    names = " or ".join(candidates)
    return CSpineInputError(
        f"{names} series", f"is needed by step {step!r} ({what}) but was not given: add it, or leave {step!r} out"
    )


def check_steps(steps: Sequence[str]) -> tuple[str, ...]:
    """The chosen steps in :data:`STEPS` order; refuses unknown steps, none, and ``measure`` without ``segment``."""
    steps = tuple(steps)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise CSpineInputError("--steps", f"unknown steps {unknown}; expected some of {list(STEPS)}")
    if not steps:
        raise CSpineInputError("--steps", "choose at least one step")
    if "measure" in steps and "segment" not in steps:
        raise CSpineInputError("--steps", "'measure' measures the cord that 'segment' finds: add the segment step")
    return tuple(s for s in STEPS if s in steps)


def plan_case(steps: Sequence[str], present: Sequence[str], models: Mapping[str, PipelineModel]) -> dict[str, list]:
    """Series used by each step, or :class:`CSpineInputError` naming the first missing series and its step."""
    plan: dict[str, list[str]] = {}
    for step in steps:
        if step == "register":
            ct = _first_present(REGISTRATION_CT, present)
            if ct is None:
                raise _missing(step, "the CT moved onto the MRI", REGISTRATION_CT)
            mri = _first_present(REGISTRATION_MRI, present)
            if mri is None:
                raise _missing(step, "the MRI the CT is registered to", REGISTRATION_MRI)
            plan[step] = [ct, mri]
        elif step in ("predict", "saliency"):
            model = models["classifier"]
            for name in model.inputs:
                if name not in present:
                    pair = " and ".join(model.inputs)
                    raise _missing(step, f"classifier {model.id} reads {pair}", [name])
            plan[step] = list(model.inputs)
        elif step == "segment":
            model = models["segmentation"]
            candidates = [s for s in (model.inputs or SEGMENTATION_MRI) if s in SEGMENTATION_MRI] or SEGMENTATION_MRI
            mri = _first_present(candidates, present)
            if mri is None:
                raise _missing(step, f"segmentation model {model.id} segments an MRI", candidates)
            plan[step] = [mri]
        elif step == "measure":
            plan[step] = list(plan["segment"])
    return plan


# --- run ------------------------------------------------------------------------------------------------------------


class _Progress:
    """Maps each step's own progress (0..1) onto the fraction of the whole job, by :data:`STEP_WEIGHTS`."""

    def __init__(self, steps: Sequence[str], callback: ProgressCallback):
        total = sum(STEP_WEIGHTS[s] for s in steps)
        self.start, done = {}, 0.0
        for step in steps:
            self.start[step] = done / total
            done += STEP_WEIGHTS[step]
        self.span = {s: STEP_WEIGHTS[s] / total for s in steps}
        self.callback = callback

    def __call__(self, step: str, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        # Rounded so that the end of one step and the start of the next report the same number (float sums differ).
        self.callback(step, round(min(self.start[step] + self.span[step] * fraction, 1.0), 6), message)

    def within(self, step: str) -> ProgressCallback:
        return lambda _name, fraction, message="": self(step, fraction, message)


def run_case(
    inputs: CaseInputs | Mapping[str, Any],
    steps: Sequence[str] = STEPS,
    models: Mapping[str, Any] | None = None,
    device: str = "auto",
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    saliency_method: str | None = None,
) -> CaseResult:
    """Run the chosen steps on one case (see the module docstring).

    Args:
        inputs: :class:`CaseInputs` or ``{series: path | Volume | node}``.
        steps: any of :data:`STEPS` (run in that order whatever order they are given in).
        models: per role, a registry id, a :class:`PipelineModel` or a network (default: the shipped models).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: ``(step, fraction of the whole job in [0, 1], message)``.
        cancel: checked before every step and at the end; a cancelled run raises
            :class:`~cspineai.errors.CSpineCancelled`.
        saliency_method: one of :data:`cspineai.saliency.METHODS`; None: :data:`cspineai.saliency.DEFAULT_METHOD`.

    Raises:
        CSpineInputError: a series a chosen step needs is missing or unreadable (before any step runs).
        CSpineModelError: a model id is not registered or its file is altered (before any step runs).
        CSpineCancelled: ``cancel`` was set.
    """
    start = time.perf_counter()
    steps = check_steps(steps)
    from .saliency import DEFAULT_METHOD, METHODS

    saliency_method = saliency_method or DEFAULT_METHOD
    if saliency_method not in METHODS:
        raise ValueError(f"saliency_method must be one of {METHODS}, not {saliency_method!r}")
    inputs = inputs if isinstance(inputs, CaseInputs) else CaseInputs.from_mapping(inputs)
    device, device_note = resolve_device(device)
    roles = list(dict.fromkeys(STEP_ROLES[s] for s in steps if s in STEP_ROLES))
    # The series are checked against what the models declare before any model is loaded, then again with the
    # loaded models (a classifier's pair is certain only once it is built).
    plan_case(steps, inputs.present(), declared_models(models, roles))
    resolved = resolve_models(models, roles, device)
    plan = plan_case(steps, inputs.present(), resolved)

    needed = [name for name in SERIES if any(name in used for used in plan.values())]
    series = {name: inputs.read(name) for name in needed}
    result = CaseResult(series=series, steps=steps, plan=plan, models=resolved, device=device,
                        saliency_method=saliency_method)
    result.timings["read"] = time.perf_counter() - start
    if device_note:
        result.notes.append(device_note)
    report = _Progress(steps, progress)
    for step in steps:
        if cancel is not None:
            cancel.raise_if_cancelled()
        report(step, 0.0, f"starting {step}")
        began = time.perf_counter()
        _STEP_FUNCTIONS[step](result, report.within(step), saliency_method)
        result.timings[step] = round(time.perf_counter() - began, 3)
        report(step, 1.0, f"{step} done in {result.timings[step]:.1f} s")
    if cancel is not None:
        cancel.raise_if_cancelled()
    result.timings["read"] = round(result.timings["read"], 3)
    result.timings["total"] = round(time.perf_counter() - start, 3)
    return result


def _register(result: CaseResult, progress: ProgressCallback, _method: str) -> None:
    from .registration import register

    ct_name, mri_name = result.plan["register"]
    model = result.models["registration"]
    method = model.options.get("method", "fpran")
    progress("register", 0.1, f"{ct_name} onto {mri_name} ({method})")
    result.registration = register(result.series[ct_name], result.series[mri_name], model=model.module, method=method)
    progress("register", 0.95, f"folding {result.registration.folding_percent:.2f}% of voxels")


def _predict(result: CaseResult, progress: ProgressCallback, _method: str) -> None:
    from .prediction import predict_pain

    model = result.models["classifier"]
    result.prediction = predict_pain({s: result.series[s] for s in result.plan["predict"]}, model.module, result.device)
    if model.threshold is None:
        result.notes.append(f"classifier {model.id} carries no fitted operating threshold: {DEFAULT_THRESHOLD} used")
    progress("predict", 0.95, f"P(neck pain) = {result.prediction.probability:.3f}")


def _saliency(result: CaseResult, progress: ProgressCallback, method: str) -> None:
    from .saliency import saliency_maps

    model = result.models["classifier"]
    progress("saliency", 0.1, f"{method} maps of both branches")
    result.saliency = saliency_maps(model.module, {s: result.series[s] for s in result.plan["saliency"]}, method)


def _segment(result: CaseResult, progress: ProgressCallback, _method: str) -> None:
    from .segmentation import segment_cord

    model = result.models["segmentation"]
    (name,) = result.plan["segment"]
    result.segmentation_series = name
    result.segmentation = segment_cord(
        result.series[name], model.module, model.options.get("config"), result.device, progress
    )


def _measure(result: CaseResult, progress: ProgressCallback, _method: str) -> None:
    from .morphometry import measure_cord

    labels = result.segmentation
    progress("measure", 0.1, "centreline, cross-sections, levels")
    result.morphometry = measure_cord(cord=labels, csf=labels, levels=labels)


_STEP_FUNCTIONS: dict[str, Callable[[CaseResult, ProgressCallback, str], None]] = {
    "register": _register,
    "predict": _predict,
    "saliency": _saliency,
    "segment": _segment,
    "measure": _measure,
}


# --- report ---------------------------------------------------------------------------------------------------------

CALIBRATION_CAUTION = (
    "The probability is the classifier's softmax output. Unless the model card states a calibration on an external "
    "cohort, read it as a ranking score: compare it with the operating threshold, not as a frequency."
)


def risk_label(probability: float, threshold: float) -> str:
    """The report's wording of a probability against the operating threshold."""
    return f"{'higher' if probability >= threshold else 'lower'} risk of postoperative neck pain"


def build_report(result: CaseResult) -> dict:
    """The ``report.json`` mapping: prediction with threshold and calibration note, models (ids, SHA-256), grids,
    morphometry summary, timings, software versions. Series are named, never files; no header field is copied."""
    import platform

    import numpy as np
    import torch

    from . import __version__

    report: dict[str, Any] = {
        "format": "cspineai-report-1",
        "software": {"cspineai": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "steps": list(result.steps),
        "series_used": result.plan,
        "grids": {
            name: {"shape_kji": list(v.shape), "spacing_mm": [round(float(s), 4) for s in v.spacing]}
            for name, v in result.series.items()
        },
        "models": {role: model.describe() for role, model in result.models.items()},
        "device": result.device,
        "timings_s": result.timings,
        "notes": list(result.notes),
        "disclaimer": "Research software, not a medical device: results must be reviewed by a qualified clinician.",
    }
    if result.prediction is not None:
        p, t = float(result.prediction.probability), result.threshold
        report["prediction"] = {
            "probability": round(p, 6),
            "threshold": t,
            "threshold_source": "model" if result.models["classifier"].threshold is not None else "default",
            "predicted_pain": bool(p >= t),
            "risk": risk_label(p, t),
            "series": list(result.prediction.series),
            "calibration": result.models["classifier"].calibration or CALIBRATION_CAUTION,
        }
    if result.registration is not None:
        reg = result.registration
        report["registration"] = {
            "method": reg.method,
            "moving": result.plan["register"][0],
            "fixed": result.plan["register"][1],
            "folding_percent": round(float(reg.folding_percent), 4),
            "sd_log_jacobian": round(float(reg.sd_log_jacobian), 4),
            "max_displacement_mm": round(float(np.linalg.norm(reg.displacement_ras, axis=-1).max()), 3),
        }
    if result.saliency:
        from .saliency import default_smoothing

        report["saliency"] = {
            "method": result.saliency_method,
            "smooth_mm": default_smoothing(result.saliency_method),
            "series": sorted(result.saliency),
            "note": "per-branch maps, each normalised to [0, 1] on its own series' grid: evidence for the pain class",
        }
    if result.segmentation is not None:
        voxel_ml = float(np.prod(result.segmentation.spacing)) / 1000.0
        report["segmentation"] = {
            "series": result.segmentation_series,
            "cord_volume_ml": round(float(np.count_nonzero(result.segmentation.array == 1)) * voxel_ml, 4),
        }
    if result.morphometry is not None:
        report["morphometry"] = _json_safe(result.morphometry.summary)
    return report


def _json_safe(value):
    import math

    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


# --- results folder -------------------------------------------------------------------------------------------------


def write_results(
    result: CaseResult,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    bundle: bool = True,
    cancel: CancelToken | None = None,
) -> dict[str, Path]:
    """Write the results folder atomically; returns the written files by role.

    Files (those of the steps run): ``warped_ct.nrrd`` (CT on the MRI grid), ``displacement_lps.nrrd`` (vector field
    ``[k, j, i, 3]`` LPS mm on the MRI grid: MRI point x -> CT point x + d(x)), ``heatmap_<series>.nrrd``,
    ``segmentation.nrrd`` (label map on the segmented series' grid), ``morphometry_slices.csv``,
    ``morphometry_levels.csv``, ``morphometry_csa.png``, ``report.json``, ``report.png``, ``report.pdf`` and
    ``case.mrb`` (Slicer scene, with ``views.png``). The folder appears complete or not at all.
    """
    import json

    from .atomic import atomic_directory, atomic_write_text
    from .io import write_volume

    out_dir = Path(out_dir).absolute()
    written: dict[str, Path] = {}
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:

        def final(path: Path) -> Path:
            return out_dir / path.relative_to(tmp)

        report = build_report(result)
        if result.registration is not None:
            reg = result.registration
            written["warped_ct"] = write_volume(reg.warped_ct.with_array(reg.warped_ct.array), tmp / "warped_ct.nrrd")
            written["displacement"] = _write_field(reg.displacement_lps, reg.reference, tmp / "displacement_lps.nrrd")
        for name, heatmap in result.saliency.items():
            written[f"heatmap {name}"] = write_volume(heatmap, tmp / f"heatmap_{name}.nrrd")
        if result.segmentation is not None:
            written["segmentation"] = write_volume(result.segmentation, tmp / "segmentation.nrrd")
        if result.morphometry is not None:
            from .morphometry import write_outputs

            for role, path in write_outputs(result.morphometry, tmp, "morphometry").items():
                written[f"morphometry {role}"] = path
        written["report.json"] = atomic_write_text(tmp / REPORT_JSON, json.dumps(report, indent=2) + "\n")
        written.update(write_report_figure(result, report, tmp))
        if bundle:
            from .scene.results import write_results_scene

            written.update(write_results_scene(result, tmp))
        if cancel is not None:
            cancel.raise_if_cancelled()  # last chance: a cancelled run must leave no folder
        written = {role: final(path) for role, path in written.items()}
    return written


def _write_field(displacement_lps, grid: Volume, path: Path) -> Path:
    """The displacement field as a 3-vector image (float32, LPS mm) with the MRI grid's geometry, written atomically."""
    import SimpleITK as sitk

    from .atomic import atomic_path
    from .registration import displacement_image

    image = sitk.Cast(displacement_image(displacement_lps, grid), sitk.sitkVectorFloat32)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path


def _key_slice(volume: Volume, weights) -> int:
    """Index along k of the slice holding most of ``weights`` (a map on ``volume``'s grid), else the middle slice."""
    import numpy as np

    if weights is not None:
        totals = np.asarray(weights, dtype=float).reshape(volume.shape[0], -1).sum(axis=1)
        if totals.max() > 0:
            return int(np.argmax(totals))
    return volume.shape[0] // 2


def write_report_figure(result: CaseResult, report: Mapping, folder: Path) -> dict[str, Path]:
    """``report.png`` and ``report.pdf``: key slices with overlays, the CSA plot and the prediction (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .atomic import atomic_path
    from .geometry import reorient

    panels = []  # (title, image, overlay, overlay kind, aspect)
    for name, heatmap in result.saliency.items():
        canonical_map = reorient(heatmap, heatmap.plane)
        k = _key_slice(canonical_map, canonical_map.array)
        image = reorient(result.series[name], heatmap.plane).array[k].astype(float)
        method = "Grad-CAM" if result.saliency_method == "gradcam" else result.saliency_method.replace("_", " ")
        panels.append((f"{name} with {method}", image, canonical_map.array[k], "heatmap", canonical_map))
    if result.segmentation is not None:
        labels = reorient(result.segmentation, result.segmentation.plane)
        k = _key_slice(labels, labels.array == 1)
        image = reorient(result.series[result.segmentation_series], labels.plane).array[k].astype(float)
        panels.append((f"{result.segmentation_series} with segmentation", image, labels.array[k], "labels", labels))
    if result.registration is not None:
        warped = reorient(result.registration.warped_ct, result.registration.reference.plane)
        mri = reorient(result.registration.reference, result.registration.reference.plane)
        k = mri.shape[0] // 2
        panels.append((f"CT registered to {result.plan['register'][1]}", mri.array[k].astype(float),
                       warped.array[k].astype(float), "ct", mri))

    columns = max(len(panels), 1)
    has_plot = result.morphometry is not None
    figure = plt.figure(figsize=(4.2 * columns, 8.4 if has_plot else 5.0), dpi=110)
    rows = 2 if has_plot else 1
    for index, (title, image, overlay, kind, grid) in enumerate(panels):
        axis = figure.add_subplot(rows, columns, index + 1)
        # Pixel aspect from the grid's in-plane spacing (i along x, j along y) so anatomy is not stretched.
        aspect = grid.spacing[1] / grid.spacing[0]
        low, high = np.percentile(image, (1, 99)) if image.size else (0, 1)
        axis.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, aspect=aspect)
        if kind == "heatmap":
            axis.imshow(np.ma.masked_less(overlay, 0.05), cmap="inferno", vmin=0, vmax=1, alpha=0.55, aspect=aspect)
        elif kind == "labels":
            axis.contour(overlay == 1, levels=[0.5], colors=["yellow"], linewidths=0.8)
            axis.contour(overlay == 2, levels=[0.5], colors=["cyan"], linewidths=0.6)
            axis.contour(overlay >= 3, levels=[0.5], colors=["orange"], linewidths=0.6)
        elif kind == "ct":
            bone = np.ma.masked_less(overlay, 300.0)  # bone edges over the MRI show the alignment
            axis.imshow(bone, cmap="autumn", alpha=0.45, aspect=aspect)
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    if has_plot:
        axis = figure.add_subplot(2, 1, 2)
        distance = result.morphometry.column("distance_from_top_mm")
        axis.plot(distance, result.morphometry.column("csa_mm2"), "-o", markersize=2, label="CSA (angle-corrected)")
        axis.plot(distance, result.morphometry.column("area_mm2"), "--", linewidth=0.8, label="area in slice")
        axis.set_xlabel("distance from the most superior cord slice (mm)")
        axis.set_ylabel("cord area (mm²)")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    lines = []
    if "prediction" in report:
        prediction = report["prediction"]
        lines.append(f"P(postoperative neck pain) = {prediction['probability']:.3f} "
                     f"(threshold {prediction['threshold']:.3f}: {prediction['risk']})")
    if result.morphometry is not None and "csa_mean_mm2" in result.morphometry.summary:
        lines.append(f"mean cord CSA {result.morphometry.summary['csa_mean_mm2']:.1f} mm²")
    lines.append("Research software, not for diagnosis.")
    figure.suptitle("\n".join(lines), fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    written = {}
    for name, kind in ((REPORT_PNG, "png"), (REPORT_PDF, "pdf")):
        with atomic_path(folder / name) as tmp:
            figure.savefig(tmp, format=kind)
        written[name] = folder / name
    plt.close(figure)
    return written


def bundled_case():
    """The bundled synthetic case (:class:`cspineai.phantom.PhantomCase`, seed :data:`DEMO_SEED`, ``coarse``
    protocol): all five series, true labels, true CT->MRI displacement and outcome. Deterministic."""
    from .phantom import generate_case

    return generate_case(DEMO_SEED, resolution=DEMO_RESOLUTION)


def run_to_folder(
    inputs: CaseInputs | Mapping[str, Any],
    out_dir: str | os.PathLike,
    steps: Sequence[str] = STEPS,
    models: Mapping[str, Any] | None = None,
    device: str = "auto",
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    overwrite: bool = False,
    bundle: bool = True,
    saliency_method: str | None = None,
) -> tuple[CaseResult, dict[str, Path]]:
    """:func:`run_case` then :func:`write_results`; an existing folder is refused before any work (unless
    ``overwrite``)."""
    if Path(out_dir).exists() and not overwrite:
        raise CSpineInputError(out_dir, "output folder already exists; choose another folder or allow overwriting")
    result = run_case(inputs, steps, models, device, progress, cancel, saliency_method)
    progress("write", 1.0, "writing the results folder")
    written = write_results(result, out_dir, overwrite=overwrite, bundle=bundle, cancel=cancel)
    return result, written


__all__ = [
    "DEFAULT_MODEL_IDS",
    "DEMO_RESOLUTION",
    "DEMO_SEED",
    "MODEL_ROLES",
    "STEPS",
    "CaseInputs",
    "CaseResult",
    "PipelineModel",
    "build_report",
    "bundled_case",
    "check_steps",
    "declared_models",
    "default_model_id",
    "load_registry_model",
    "plan_case",
    "resolve_device",
    "resolve_models",
    "run_case",
    "run_to_folder",
    "write_report_figure",
    "write_results",
]
