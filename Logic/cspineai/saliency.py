"""Saliency maps of the two-branch neck-pain classifier, one per branch, on each input series' own grid.

Methods (``method=``):

- ``"gradcam"``: MONAI's :class:`~monai.visualize.GradCAM` on each branch's last pyramid stage
  (:meth:`~cspineai.nn.classifier.TwoBranchClassifier.target_layers`), ``ReLU(sum_c mean(dy/dA_c) * A_c)`` (Selvaraju
  et al. 2017). MONAI hands extra keyword arguments to the model and upsamples to the spatial shape of ``x``, so each
  branch is explained through :class:`BranchAsInput`, which makes that branch's tensor the model's ``x`` and passes the
  other series as keyword arguments.
- ``"integrated_gradients"`` (the default, :data:`DEFAULT_METHOD`): ``(x - x0) * mean_alpha dy/dx(x0 + alpha (x - x0))``
  along one straight path on which all branches move together (Sundararajan et al. 2017; midpoint rule, ``steps``
  points). Baseline ``x0``: by default the input blurred by a Gaussian of :data:`IG_BLUR_MM` (:func:`blurred_baselines`;
  Sturmfels et al., "Visualizing the impact of feature attribution baselines", Distill 2020), so the map shows which
  *detail* (an edge, a small finding) raised the logit rather than which intensity did, and the path stays among images
  with the case's own anatomy; the zero image (the normalised intensity floor) on request. Chosen on phantoms the
  classifier never saw (seeds 300000-300039, ``benchmarks/bench_saliency.py --ig-baseline``, docs/results/saliency.md).
  Hand-written: MONAI has none, and Captum is not a dependency; it is ten lines.
- ``"occlusion"``: MONAI's :class:`~monai.visualize.OcclusionSensitivity` (Gaussian occluder), saliency = the drop of
  the target-class probability when the neighbourhood is occluded. Slow on a CPU (hundreds of forward passes a case).

All three explain ``y`` = the target class's logit (the probability for occlusion) and keep only evidence *for* the
target class (Grad-CAM's ReLU; the positive part of the other two), so the maps of every method answer the same
question and the faithfulness checks of :mod:`cspineai.metrics.saliency` compare them fairly.

Geometry. The network sees each series on its working grid (:mod:`cspineai.preprocess`: reoriented, resampled, cropped
or padded). A level-4 feature voxel ``n`` of a same-padded strided network is centred on input voxel ``n * step``
(:class:`~cspineai.nn.backbone.PyramidBackbone`), whereas ``F.interpolate(align_corners=False)``, MONAI's default
upsampler, would put it at ``(n + 0.5) * step - 0.5``: 7.5 voxels (9 to 11 mm) off at level 4. :func:`feature_upsampler`
interpolates at the true centres instead. The working-grid map is then resampled (linear, through the working grid's
physical geometry, :func:`cspineai.geometry.resample_like`) onto the series as acquired; outside the working grid's
field of view the map is 0.

Smoothing: integrated gradients' map is smoothed on the working grid by a Gaussian of :data:`IG_SMOOTH_MM` before it
is resampled (:func:`default_smoothing`; ``smooth_mm=0`` keeps the per-voxel attributions).

Normalisation: each map is divided by its maximum on the grid it is returned on, so it lies in [0, 1] with 0 meaning
"no evidence for the target class"; maps are normalised per branch, so they do not compare the two branches' weight.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .errors import CSpineInputError, CSpineModelError
from .geometry import resample_like
from .volume import Volume

METHODS = ("gradcam", "integrated_gradients", "occlusion")
#: The map the pipeline, ``cspineai run`` and the Slicer module show unless told otherwise. Integrated gradients, not
#: the paper's Grad-CAM: on the shipped classifier's 50 synthetic test cases Grad-CAM's last-stage map pointed at the
#: known cause in 0 / 16% of the positive cases (T1_sag / CT_bone), integrated gradients in 68 / 58% unsmoothed and
#: 84 / 84% smoothed by :data:`IG_SMOOTH_MM` (65 / 84% on the 37 positive selection phantoms);
#: ``benchmarks/bench_saliency.py``, docs/results/saliency.md. Grad-CAM stays available (``method="gradcam"``).
DEFAULT_METHOD = "integrated_gradients"
DEFAULT_IG_STEPS = 16
#: Gaussian sigma (mm) of integrated gradients' default baseline (the blur of bench_saliency's deletion baseline).
IG_BLUR_MM = 8.0
#: Gaussian sigma (mm) that smooths integrated gradients' map on the working grid before it is shown. Per-voxel
#: attributions of a strided network are speckled; the cause of a prediction is a region. Chosen on 37 positive
#: phantoms the classifier never saw (seeds 300000-300099, one sigma for both branches among 0, 3, 4, 5, 6, 8 and
#: 10 mm, adopted only if it beat no smoothing by at least 3 pointing-game hits): 8 mm, 58 hits against 52 in the
#: selection script (reflecting border), 55 against 52 with this module's nearest-value border (T1_sag 24, CT_bone 31
#: of 37). It costs deletion-curve faithfulness (docs/results/saliency.md).
IG_SMOOTH_MM = 8.0


# --- the model seen from one branch -----------------------------------------------------------------------------------
class BranchAsInput(nn.Module):
    """The two-branch classifier with one branch's input as the positional argument.

    ``forward(x, **others)`` = ``model({series: x, **others})``, ``x`` of shape ``(B, 1, D, H, W)``; an ``others``
    tensor of batch 1 is expanded to ``B`` (occlusion feeds batches of occluded copies of one case).
    """

    def __init__(self, model: nn.Module, series: str):
        super().__init__()
        self.model = model
        self.series = series

    def forward(self, x: torch.Tensor, **others: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        inputs = {k: v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 and batch > 1 else v for k, v in others.items()}
        inputs[self.series] = x
        return self.model(inputs)


def branch_series(model: nn.Module) -> tuple[str, ...]:
    """The series the classifier reads, in its branch order; a model without them is refused."""
    series = getattr(model, "series", None)
    if not series or not hasattr(model, "target_layers"):
        raise CSpineModelError(f"{type(model).__name__} is not a two-branch classifier (needs .series and "
                               ".target_layers()); saliency maps need cspineai.nn.classifier.TwoBranchClassifier")
    return tuple(series)


def _module_name(root: nn.Module, module: nn.Module) -> str:
    # MONAI addresses the target layer by its dotted name inside the module it wraps.
    for name, candidate in root.named_modules():
        if candidate is module:
            return name
    raise CSpineModelError(f"target layer {type(module).__name__} is not a submodule of the classifier")


@contextlib.contextmanager
def _removing_new_hooks(module: nn.Module) -> Iterator[None]:
    """Remove, on exit, the hooks registered on ``module`` inside the block.

    MONAI's ModelWithHooks registers its hooks and drops the handles; without this every call would leave two more hooks
    on the classifier (slower, and gradients kept alive for as long as the model lives).
    """
    handles = []

    def recording(register):
        def register_and_keep(*args, **kwargs):
            handle = register(*args, **kwargs)
            handles.append(handle)
            return handle

        return register_and_keep

    names = ("register_forward_hook", "register_full_backward_hook")
    for name in names:
        object.__setattr__(module, name, recording(getattr(module, name)))
    try:
        yield
    finally:
        for name in names:
            object.__delattr__(module, name)
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


# --- upsampling at the true feature centres -----------------------------------------------------------------------
def feature_offset(branch: nn.Module | None, step: Sequence[float]) -> tuple[float, ...]:
    """Input-voxel index of feature voxel 0's centre, per axis: 0 for same-padded strided convolutions (the pyramid
    backbone, ResNet, DenseNet, EfficientNet), ``(step - 1) / 2`` for ViT's non-overlapping patches."""
    if getattr(branch, "kind", "") == "vit":
        return tuple((s - 1.0) / 2.0 for s in step)
    return tuple(0.0 for _ in step)


def feature_upsampler(branch: nn.Module | None) -> Callable[[Sequence[int]], Callable[[torch.Tensor], torch.Tensor]]:
    """A MONAI ``upsampler`` factory: ``factory(input_spatial_size)(cam)`` maps ``cam`` ``(B, 1, d, h, w)`` onto the
    input grid ``(B, 1, D, H, W)`` by trilinear interpolation, feature voxel ``n`` sitting at input voxel
    ``offset + n * step`` with ``step = D / d`` per axis; beyond the first and last centres the edge value is kept."""

    def factory(spatial_size: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
        size = [int(n) for n in spatial_size]

        def upsample(cam: torch.Tensor) -> torch.Tensor:
            coarse = cam.shape[2:]
            step = [n / c for n, c in zip(size, coarse, strict=True)]
            offset = feature_offset(branch, step)
            axes = []
            for n, c, s, o in zip(size, coarse, step, offset, strict=True):
                position = (torch.arange(n, dtype=cam.dtype, device=cam.device) - o) / s  # in feature voxels
                # grid_sample with align_corners=True: -1 and 1 are the centres of the first and last feature voxel.
                axes.append(2.0 * position / (c - 1) - 1.0 if c > 1 else torch.zeros_like(position))
            grid = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)  # (D, H, W, 3) as (x, y, z)
            grid = grid[None].expand(cam.shape[0], *grid.shape)
            return nn.functional.grid_sample(cam, grid, mode="bilinear", padding_mode="border", align_corners=True)

        return upsample

    return factory


# --- the three methods on working-grid tensors -----------------------------------------------------------------------
def gradcam(model: nn.Module, tensors: Mapping[str, torch.Tensor], target_class: int = 1,
            level: int | None = None) -> dict[str, torch.Tensor]:
    """Grad-CAM of ``target_class`` per branch: ``{series: (B, 1, D, H, W)}`` on each input's grid, >= 0, not
    normalised. ``tensors``: ``{series: (B, 1, D, H, W)}`` working-grid inputs; ``level``: the pyramid level whose
    activations are weighted (default: the last stage, as the paper; a finer level gives a sharper map)."""
    from monai.visualize import GradCAM

    out = {}
    targets = model.target_layers(level)
    branches = getattr(model, "branches", {})
    with _eval_mode(model):
        for series in branch_series(model):
            wrapper = BranchAsInput(model, series)
            others = {k: v for k, v in tensors.items() if k != series}
            with _removing_new_hooks(targets[series]):
                cam = GradCAM(wrapper, _module_name(wrapper, targets[series]),
                              upsampler=feature_upsampler(branches[series] if series in branches else None),
                              postprocessing=lambda m: m)
                with torch.enable_grad():
                    maps = cam(tensors[series], class_idx=target_class, **others)
            out[series] = maps.detach()
    return out


def integrated_gradients(model: nn.Module, tensors: Mapping[str, torch.Tensor], target_class: int = 1,
                         steps: int = DEFAULT_IG_STEPS, baselines: Mapping[str, torch.Tensor] | None = None,
                         batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Signed integrated gradients of the ``target_class`` logit, ``{series: (B, 1, D, H, W)}``.

    All branches move together along ``x0 + alpha (x - x0)``, ``alpha`` at the midpoints of ``steps`` equal intervals,
    so that the attributions of both series add up to ``logit(x) - logit(x0)`` (completeness) up to the quadrature
    error. ``baselines`` default to zeros here (:func:`saliency_maps` passes :func:`blurred_baselines`);
    ``batch_size`` path points run per forward pass.
    """
    series = branch_series(model)
    baselines = baselines or {}
    out: dict[str, list[torch.Tensor]] = {s: [] for s in series}
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    with _eval_mode(model):
        for b in range(next(iter(tensors.values())).shape[0]):
            x = {s: tensors[s][b:b + 1] for s in series}
            x0 = {s: baselines[s][b:b + 1] if s in baselines else torch.zeros_like(x[s]) for s in series}
            total = {s: torch.zeros_like(x[s]) for s in series}
            for chunk in alphas.split(batch_size):
                a = chunk.to(x[series[0]].device).view(-1, 1, 1, 1, 1)
                path = {s: (x0[s] + a * (x[s] - x0[s])).requires_grad_(True) for s in series}
                with torch.enable_grad():
                    score = model(path)[:, target_class].sum()
                    grads = torch.autograd.grad(score, [path[s] for s in series])
                for s, g in zip(series, grads, strict=True):
                    total[s] += g.sum(dim=0, keepdim=True)
            for s in series:
                out[s].append((x[s] - x0[s]) * total[s] / steps)
    return {s: torch.cat(v).detach() for s, v in out.items()}


def occlusion(model: nn.Module, tensors: Mapping[str, torch.Tensor], target_class: int = 1,
              mask_size: Mapping[str, Sequence[int]] | None = None, overlap: float = 0.5,
              batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Occlusion sensitivity per branch: the drop of the ``target_class`` probability when a Gaussian occluder covers
    the neighbourhood, ``{series: (1, 1, D, H, W)}`` (batch 1 only, as MONAI's), >= 0.

    ``mask_size``: per series, the occluder's ``(D, H, W)`` in voxels (default a quarter of each axis, at least 2).
    """
    from monai.visualize import OcclusionSensitivity

    out = {}
    with _eval_mode(model), torch.no_grad():
        reference = torch.softmax(model(dict(tensors)), dim=1)[:, target_class]
        for series in branch_series(model):
            x = tensors[series]
            if x.shape[0] != 1:
                raise ValueError("occlusion saliency takes one case at a time (batch 1)")
            size = (mask_size or {}).get(series) or [max(2, n // 4) for n in x.shape[2:]]
            others = {k: v for k, v in tensors.items() if k != series}
            occ = OcclusionSensitivity(BranchAsInput(model, series), mask_size=tuple(int(n) for n in size),
                                       n_batch=batch_size, verbose=False, mode="gaussian", overlap=overlap)
            probabilities, _ = occ(x, **others)  # (1, num_classes, D, H, W), a MetaTensor
            probabilities = torch.as_tensor(probabilities.as_tensor() if hasattr(probabilities, "as_tensor")
                                            else probabilities)
            drop = reference.view(-1, 1, 1, 1, 1) - probabilities[:, target_class:target_class + 1]
            out[series] = drop.clamp_min(0.0).to(x.dtype)
    return out


def blurred_baselines(prepared: Mapping, sigma_mm: float = IG_BLUR_MM) -> dict[str, torch.Tensor]:
    """Integrated gradients' default baselines: each prepared series (:class:`cspineai.preprocess.PreparedSeries`)
    blurred by a Gaussian of ``sigma_mm`` on its working grid, ``{series: (1, 1, D, H, W)}``."""
    from .metrics.saliency import blurred_baseline

    return {s: torch.from_numpy(blurred_baseline(p.tensor[0].numpy(), p.grid.spacing[::-1], sigma_mm))[None, None]
            for s, p in prepared.items()}


def default_smoothing(method: str) -> float:
    """Gaussian sigma (mm) the maps of ``method`` are smoothed by unless told otherwise: :data:`IG_SMOOTH_MM` for
    integrated gradients, 0 (none) for Grad-CAM, whose map is already an interpolation of coarse cells, and occlusion,
    whose occluder already spans a neighbourhood."""
    return IG_SMOOTH_MM if method == "integrated_gradients" else 0.0


def normalise(saliency: np.ndarray) -> np.ndarray:
    """float32 map divided by its maximum (all zeros stays zeros); negative values become 0."""
    array = np.clip(np.nan_to_num(np.asarray(saliency, dtype=np.float32)), 0.0, None)
    peak = float(array.max()) if array.size else 0.0
    return (array / peak if peak > 0 else array).astype(np.float32)


def working_saliency(model: nn.Module, tensors: Mapping[str, torch.Tensor], method: str = DEFAULT_METHOD,
                     target_class: int = 1, smooth_mm: float = 0.0,
                     spacings: Mapping[str, Sequence[float]] | None = None, **options) -> dict[str, torch.Tensor]:
    """Normalised maps ``{series: (B, D, H, W)}`` in [0, 1] on the working grids (each sample normalised alone).

    ``tensors``: ``{series: (B, 1, D, H, W)}``, as the classifier takes them; ``smooth_mm`` > 0 smooths each map by
    a Gaussian of that sigma before normalising, which needs each working grid's ``spacings`` ``(dk, dj, di)`` in mm
    (:func:`default_smoothing` says what :func:`saliency_maps` uses); ``options`` go to the method (``level`` for
    Grad-CAM, ``steps``/``baselines``/``batch_size`` for integrated gradients, ``mask_size``/``overlap``/``batch_size``
    for occlusion).
    """
    series = branch_series(model)
    missing = [s for s in series if s not in tensors]
    if missing:
        raise CSpineInputError(f"{', '.join(missing)} series", "is required by this model but was not provided")
    if smooth_mm > 0 and not all(s in (spacings or {}) for s in series):
        raise ValueError("smoothing a map in mm needs the spacing of every series' working grid (spacings=)")
    num_classes = getattr(getattr(model, "head", None), "out_features", None)
    if num_classes is not None and not 0 <= int(target_class) < num_classes:
        raise ValueError(f"target_class must be in [0, {num_classes}), got {target_class}")
    if method == "gradcam":
        raw = gradcam(model, tensors, target_class, **options)
    elif method == "integrated_gradients":
        raw = {s: a.clamp_min(0.0) for s, a in integrated_gradients(model, tensors, target_class, **options).items()}
    elif method == "occlusion":
        raw = occlusion(model, tensors, target_class, **options)
    else:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    out = {}
    for s in series:
        maps = raw[s].cpu().numpy()[:, 0]
        if smooth_mm > 0:
            from .metrics.saliency import blurred_baseline

            maps = [blurred_baseline(m, spacings[s], smooth_mm) for m in maps]
        out[s] = torch.from_numpy(np.stack([normalise(m) for m in maps]))
    return out


def class_probability(model: nn.Module, tensors: Mapping[str, torch.Tensor], series: str,
                      target_class: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """``score(images)``: the ``target_class`` probability for a batch of ``series`` inputs ``(n, D, H, W)`` (numpy),
    the other series held at ``tensors`` (batch 1); the scorer of :func:`cspineai.metrics.saliency.deletion_curve`."""
    wrapper = BranchAsInput(model, series)
    others = {k: v for k, v in tensors.items() if k != series}
    device = tensors[series].device

    def score(images: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(images, dtype=np.float32), device=device)[:, None]
        with _eval_mode(model), torch.no_grad():
            return torch.softmax(wrapper(x, **others), dim=1)[:, target_class].cpu().numpy()

    return score


# --- back to the series as acquired ---------------------------------------------------------------------------------
def to_series_grid(saliency: np.ndarray, working_grid: Volume, reference: Volume) -> Volume:
    """A working-grid map ``(D, H, W)`` resampled (linear) onto ``reference``'s grid and normalised to [0, 1].

    ``working_grid`` carries the map's physical geometry (:attr:`cspineai.preprocess.PreparedSeries.grid`); points of
    ``reference`` outside it get 0. Returns a float32 :class:`Volume` with ``reference``'s geometry.
    """
    array = np.asarray(saliency, dtype=np.float32)
    if array.shape != tuple(working_grid.shape):
        raise ValueError(f"saliency shape {array.shape} does not match the working grid {tuple(working_grid.shape)}")
    on_grid = dataclasses.replace(working_grid, array=array, source="saliency")
    mapped = resample_like(on_grid, reference, "linear", default_value=0.0)
    return dataclasses.replace(reference, array=normalise(mapped.array), modality="saliency",
                               source=f"{reference.modality or 'series'} saliency")


def saliency_maps(model: nn.Module, inputs: Mapping, method: str = DEFAULT_METHOD, target_class: int = 1,
                  references: Mapping[str, Volume] | None = None, smooth_mm: float | None = None,
                  **options) -> dict[str, Volume]:
    """One saliency map per branch, float32 in [0, 1], on each input series' own grid.

    Args:
        model: a :class:`~cspineai.nn.classifier.TwoBranchClassifier` (any backbone).
        inputs: either the series as acquired, ``{series: Volume}`` (prepared here with
            :func:`cspineai.preprocess.prepare_case` on the model's own working grids, as prediction prepares them;
            maps come back on these volumes' grids), or already prepared
            series, ``{series: PreparedSeries}`` (maps come back on ``references[series]`` when given, else on the
            working grids).
        method: ``"integrated_gradients"`` (default), ``"gradcam"`` or ``"occlusion"`` (module docstring).
        target_class: the class explained (1: postoperative neck pain).
        references: grids to return the maps on, for prepared inputs.
        smooth_mm: Gaussian sigma (mm) applied on the working grid; None: :func:`default_smoothing` of the method.
        options: passed to the method (see :func:`working_saliency`).

    Returns:
        ``{series: Volume}`` for each series of the model; ``modality`` is ``"saliency"``.
    """
    from .preprocess import PreparedSeries, model_grids, prepare_case

    series = branch_series(model)
    if all(isinstance(inputs.get(s), PreparedSeries) for s in series):
        prepared = {s: inputs[s] for s in series}
        references = dict(references or {})
    else:
        prepared = prepare_case(inputs, series, model_grids(model))  # the grids the model was trained on
        references = {s: inputs[s] for s in series}
    device = next(model.parameters()).device
    tensors = {s: torch.as_tensor(prepared[s].tensor)[None].to(device) for s in series}
    if method == "integrated_gradients" and "baselines" not in options:
        options["baselines"] = {s: b.to(device) for s, b in blurred_baselines(prepared).items()}
    smooth_mm = default_smoothing(method) if smooth_mm is None else smooth_mm
    spacings = {s: prepared[s].grid.spacing[::-1] for s in series}
    maps = working_saliency(model, tensors, method, target_class, smooth_mm, spacings, **options)
    out = {}
    for s in series:
        grid = prepared[s].grid
        reference = references.get(s, grid)
        out[s] = to_series_grid(maps[s][0].numpy(), grid, reference)
    return out


__all__ = [
    "DEFAULT_IG_STEPS",
    "DEFAULT_METHOD",
    "IG_BLUR_MM",
    "IG_SMOOTH_MM",
    "METHODS",
    "BranchAsInput",
    "blurred_baselines",
    "branch_series",
    "class_probability",
    "default_smoothing",
    "feature_offset",
    "feature_upsampler",
    "gradcam",
    "integrated_gradients",
    "normalise",
    "occlusion",
    "saliency_maps",
    "to_series_grid",
    "working_saliency",
]
