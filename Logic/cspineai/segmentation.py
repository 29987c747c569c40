"""Spinal cord, CSF/canal and vertebral body segmentation of a cervical MRI (paper 001, ``methods.md`` section 4).

:func:`segment_cord` turns an MRI :class:`~cspineai.volume.Volume` of any orientation into a label map on the input's
own grid, with the values of :data:`cspineai.series.SEGMENTATION_CLASSES` (0 background, 1 cord, 2 CSF, 3..9 vertebral
bodies C2..T1). The steps:

1. **Refuse what is not a neck MRI**: a CT (``modality`` a CT series, or Hounsfield-like intensities with air near
   -1000).
2. **Intensity normalisation**: the input's ``[0.5, 99.5]`` percentiles map to ``[0, 1]`` (MRI has no absolute scale).
3. **Canonical working grid**: whatever the acquisition (sagittal, axial, oblique), the image is resampled onto sagittal
   slices aligned with the patient axes (index order ``PIL``: i towards P, j towards I, k towards L), covering the
   input's physical extent, at a fixed in-plane spacing. The slice (LR) spacing follows the input's own LR sampling,
   clipped to ``[spacing_mm, max_slice_spacing_mm]``, so a thick-slice sagittal series is not interpolated into many
   more slices. This is why a sagittal, axial or oblique scan of one neck gives the same physical result.
4. **Network**: the 2-D model runs slice by slice (``spatial_dims=2``; with ``context_slices`` c > 0 each slice comes
   with its c neighbours on either side as extra input channels, :func:`slice_context`) or the 3-D model on the whole
   grid, both with MONAI's Gaussian-weighted sliding-window inference; softmax probabilities, not labels, go back to
   the input grid (linear interpolation of the background, cord, CSF and any-body probabilities, then arg-max), so
   boundaries keep sub-voxel accuracy.
5. **Cord or CSF, by the image as well** (:func:`refine_cord_csf`): inside the canal the network's cord-versus-CSF
   probability is combined with how well each voxel's intensity fits the cord's and the CSF's intensity in this very
   scan (a Gaussian per class centred on the voxels the network is sure of, one shared width), without cutting the
   cord or leaving CSF inside it.
6. **Clean-up**: the canal (cord + CSF) is reduced to its largest connected component, the cord to its largest piece
   and the pieces that continue it along the spine (:func:`keep_cord_chain`: a cord the network interrupts at a
   stenosis keeps both sides); a cord smaller than ``min_cord_volume_mm3`` means no neck in view: an error, never an
   empty segmentation.
7. **Vertebral levels**: see :func:`assign_vertebral_levels`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import CSpineInputError, CSpineModelError
from .geometry import index_to_world, physical_bounds, resample_like
from .progress import ProgressCallback, no_progress
from .series import BODY_VALUES, CORD, CSF, CT_SERIES, SEGMENTATION_CLASSES
from .volume import Volume

#: Direction of the working grid: columns are the LPS unit vectors of i (towards P), j (towards I) and k (towards L).
WORKING_DIRECTION = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

#: Registry id of the shipped cord segmentation model.
DEFAULT_MODEL_ID = "cordseg-unet"  # the shipped model (see its card in cspineai/models)

# A CT shows air at about -1000 HU around the neck and in the airway, and fat at about -100 HU even when cropped
# tightly; MRI magnitudes are never far below zero.
_CT_AIR_HU, _CT_AIR_FRACTION = -500.0, 0.01
_CT_FAT_HU, _CT_FAT_FRACTION = -50.0, 0.05


@dataclasses.dataclass(frozen=True)
class SegmentationConfig:
    """Pre- and post-processing that belongs to a trained model (saved with it in the registry card).

    Args:
        spacing_mm: in-plane spacing (SI and AP) of the working sagittal slices.
        max_slice_spacing_mm: largest LR spacing of the working grid (thicker inputs are resampled to it).
        roi_size: sliding-window tile, in working voxels: ``(SI, AP)`` for 2-D models, ``(LR, SI, AP)`` for 3-D;
            a trained model's is the tile it was trained on (``CordSegTask.segmentation_config``).
        overlap: sliding-window overlap fraction.
        sw_batch_size: tiles per network call.
        spatial_dims: 2 (slice-wise) or 3.
        context_slices: for 2-D models, neighbouring working slices on either side given as extra input channels
            (0: the slice alone). A single sagittal slice cannot tell how far it lies from the cord's lateral edge;
            its neighbours can (see :func:`slice_context`).
        intensity_percentiles: input percentiles mapped to 0 and 1.
        classes: label value of each network output channel.
        min_cord_volume_mm3: smaller cords are treated as "no cord found".
        min_body_volume_mm3: vertebral body components smaller than this are dropped before level assignment.
        intensity_weight: weight of the intensity likelihood against the network in :func:`refine_cord_csf`
            (0: the network alone). Chosen on the validation fold (docs/results/segmentation.md).
    """

    spacing_mm: float = 1.0
    max_slice_spacing_mm: float = 3.0
    roi_size: tuple[int, ...] = (128, 128)
    overlap: float = 0.25
    sw_batch_size: int = 8
    spatial_dims: int = 2
    context_slices: int = 0
    intensity_percentiles: tuple[float, float] = (0.5, 99.5)
    classes: tuple[int, ...] = SEGMENTATION_CLASSES
    min_cord_volume_mm3: float = 300.0
    min_body_volume_mm3: float = 200.0
    intensity_weight: float = 1.0 / 3.0

    def __post_init__(self) -> None:
        if len(self.roi_size) != self.spatial_dims:
            raise ValueError(f"roi_size {self.roi_size} needs {self.spatial_dims} entries (spatial_dims)")
        if self.context_slices < 0 or (self.context_slices and self.spatial_dims != 2):
            raise ValueError(f"context_slices must be >= 0, and 0 for 3-D models; got {self.context_slices}")
        if not 0.0 <= self.intensity_weight < float("inf"):
            raise ValueError(f"intensity_weight must be finite and >= 0, got {self.intensity_weight}")
        if list(self.classes[:3]) != [0, CORD, CSF]:
            raise ValueError(f"classes must start with background, cord and CSF (0, {CORD}, {CSF}), not {self.classes}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentationConfig:
        """From a registry card's ``preprocessing`` mapping (lists become tuples; unknown keys are an error)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown segmentation settings {unknown}; known: {sorted(fields)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# --- input checks ---------------------------------------------------------------------------------------------------
def require_mri(volume: Volume) -> None:
    """Raise :class:`CSpineInputError` when ``volume`` is a CT (by its series name or its Hounsfield-like values)."""
    source = volume.source or volume.modality or "image"
    if volume.modality in CT_SERIES:
        raise CSpineInputError(source, f"cord segmentation needs an MRI, but this is the {volume.modality} CT series")
    values = volume.array
    air = np.count_nonzero(values < _CT_AIR_HU) / values.size
    fat = np.count_nonzero(values < _CT_FAT_HU) / values.size
    if air >= _CT_AIR_FRACTION or fat >= _CT_FAT_FRACTION:
        below, fraction = (_CT_AIR_HU, air) if air >= _CT_AIR_FRACTION else (_CT_FAT_HU, fat)
        raise CSpineInputError(
            source,
            f"cord segmentation needs an MRI, but {100 * fraction:.0f}% of the voxels are below {below:.0f}, as air "
            "and fat are in a CT (Hounsfield units); choose the T1 or T2 MRI series",
        )


# --- working grid ---------------------------------------------------------------------------------------------------
def working_grid(volume: Volume, config: SegmentationConfig) -> Volume:
    """The canonical sagittal grid (an empty ``uint8`` Volume) covering ``volume``'s physical extent; see module doc."""
    lo, hi = physical_bounds(volume)
    # LR sampling of the input: spacing of the index axis that runs most nearly left-right.
    lr_axis = int(np.argmax(np.abs(volume.direction[0])))
    lr = float(np.clip(volume.spacing[lr_axis], config.spacing_mm, config.max_slice_spacing_mm))
    spacing = np.array([config.spacing_mm, config.spacing_mm, lr])  # along i (P), j (I), k (L)
    extent = np.array([hi[1] - lo[1], hi[2] - lo[2], hi[0] - lo[0]])  # P, S-I, L extents in mm
    size = np.floor(extent / spacing + 1e-6).astype(int) + 1
    # Centre the grid on the input's extent so that no side is favoured when the extent is not a multiple of spacing.
    centre = (lo + hi) / 2.0
    half = WORKING_DIRECTION @ ((size - 1) * spacing) / 2.0
    origin = centre - half
    return Volume(np.zeros(size[::-1], dtype=np.uint8), tuple(spacing), tuple(origin), WORKING_DIRECTION.copy())


def normalise_intensity(volume: Volume, percentiles: Sequence[float]) -> Volume:
    """Map the ``percentiles`` of ``volume`` to ``[0, 1]`` and clip (MONAI ``ScaleIntensityRangePercentiles``)."""
    from monai.transforms import ScaleIntensityRangePercentiles

    scale = ScaleIntensityRangePercentiles(percentiles[0], percentiles[1], 0.0, 1.0, clip=True, dtype=np.float32)
    return volume.with_array(np.asarray(scale(volume.array.astype(np.float32)[None]))[0])


# --- network --------------------------------------------------------------------------------------------------------
def slice_context(image: np.ndarray, context: int) -> np.ndarray:
    """The 2.5-D input ``(K, 1 + 2 * context, J, I)`` of slices ``(K, J, I)``: channel ``c`` of slice ``k`` is slice
    ``k + c - context``, zeros beyond the first and last slice (as the field of view's edge looks in training)."""
    image = np.asarray(image, dtype=np.float32)
    if context == 0:
        return image[:, None]
    padded = np.pad(image, ((context, context), (0, 0), (0, 0)))
    return np.stack([padded[c : c + image.shape[0]] for c in range(2 * context + 1)], axis=1)


def window_logits(tensor: Any, model: Any, config: SegmentationConfig) -> Any:
    """Logits of ``model`` over ``tensor`` ``(N, C, *spatial)``: MONAI's Gaussian-weighted sliding windows of
    ``config.roi_size``, as inference runs the model; the training's validation runs it the same way
    (:class:`cspineai.tasks.cordseg.CordSegTask`), so the figure that picks a checkpoint is the one of its use."""
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        tensor, config.roi_size, config.sw_batch_size, model, overlap=config.overlap, mode="gaussian"
    )


def predict_probabilities(image: np.ndarray, model: Any, config: SegmentationConfig, device: str = "cpu") -> np.ndarray:
    """Class probabilities ``(C, K, J, I)`` of a normalised working-grid image ``(K, J, I)``.

    2-D models see each slice ``array[k]`` (``(J, I)`` = SI x AP) with ``config.context_slices`` neighbours on either
    side as channels; 3-D models the whole array. MONAI sliding-window
    inference with Gaussian weighting; softmax over the ``len(config.classes)`` output channels.
    """
    import torch

    model.eval()
    if config.spatial_dims == 2:
        tensor = torch.from_numpy(slice_context(image, config.context_slices)).to(device)  # (K, 1 + 2c, J, I)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    with torch.inference_mode():
        logits = window_logits(tensor, model, config)
    if logits.shape[1] != len(config.classes):
        raise CSpineModelError(
            f"the segmentation model gives {logits.shape[1]} classes but its configuration names {len(config.classes)}"
        )
    probabilities = torch.softmax(logits.float(), dim=1)
    probabilities = probabilities.permute(1, 0, 2, 3) if config.spatial_dims == 2 else probabilities[0]
    return probabilities.cpu().numpy()


def _resample_probabilities(probabilities: np.ndarray, grid: Volume, target: Volume) -> np.ndarray:
    """Resample ``(C, K, J, I)`` probabilities on ``grid`` onto ``target``'s grid (linear): ``(C, K', J', I')``."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(probabilities, 0, -1)), isVector=True)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(tuple(grid.direction.ravel()))
    reference = target.with_array(np.zeros(target.shape, dtype=np.uint8)).to_sitk()
    # Outside the working grid (never: it covers the input) every channel would be 0, which arg-max reads as background.
    out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    return np.moveaxis(sitk.GetArrayFromImage(out), -1, 0)


def refine_cord_csf(
    probabilities: np.ndarray,
    image: np.ndarray,
    weight: float,
    si_axis: int,
    confidence: float = 0.9,
    min_voxels: int = 20,
    min_sd: float = 0.02,
) -> np.ndarray:
    """Cord-versus-CSF probabilities inside the canal, with this scan's intensities as evidence next to the network's.

    ``probabilities``: ``(C, K, J, I)`` on the grid of ``image`` (``(K, J, I)``, normalised), channels background,
    cord, CSF, then any others; ``si_axis``: the array axis (0, 1, 2) that runs most nearly head to foot. Where the
    arg-max is cord or CSF (the canal), the canal's probability ``p_cord + p_csf`` is shared anew between the two by

        log P(cord) - log P(csf) = log p_cord - log p_csf + weight * (log N(I; m_cord, s) - log N(I; m_csf, s))

    with ``m`` the median intensity of the voxels the network gives that class with probability above ``confidence``
    and ``s`` the width pooled from both classes' scaled MADs. Elsewhere nothing changes, so the canal's outline stays
    the network's. Then two anatomical guards: a cross-section (plane across ``si_axis``) that this shrank below half
    the network's cord keeps the network's, and CSF enclosed by cord in a cross-section becomes cord.

    Why: on the real T1 (SCT data) the 2-D sagittal networks label the dark CSF beside the cord as cord (the cord came
    out as wide as the canal, its added voxels as dark as the CSF), while the cord is plainly brighter there. Where
    cord and CSF look alike (synthetic contrast is randomised in training) the centres are close against the width and
    the network keeps the call. Written here because MONAI's Gaussian mixture is a CUDA-only extension and its CRF a
    trainable layer; this is a two-class, one-step fit with the network as the prior.
    """
    if weight <= 0.0:
        return probabilities
    label = np.argmax(probabilities, axis=0)
    centres, variances = [], []
    for channel in (1, 2):
        sure = image[(label == channel) & (probabilities[channel] > confidence)]
        if sure.size < min_voxels:  # too little of a class to describe its intensity: the network decides
            return probabilities
        centres.append(float(np.median(sure)))
        variances.append((1.4826 * float(np.median(np.abs(sure - centres[-1])))) ** 2)
    # One width for both classes: a class whose intensities sit at the normalisation's ceiling (bright CSF or cord
    # clipped at 1) has a MAD near 0, and a Gaussian that narrow would cast every voxel below the ceiling out of it.
    sd = max(float(np.sqrt(np.mean(variances))), min_sd)
    canal = (label == 1) | (label == 2)
    x = image[canal].astype(np.float64)
    p_cord, p_csf = probabilities[1][canal], probabilities[2][canal]
    log_odds = np.log(np.clip(p_cord, 1e-6, None)) - np.log(np.clip(p_csf, 1e-6, None))
    log_odds += weight * ((x - centres[1]) ** 2 - (x - centres[0]) ** 2) / (2.0 * sd**2)
    share = 1.0 / (1.0 + np.exp(-np.clip(log_odds, -50.0, 50.0)))
    out = probabilities.copy()
    out[1][canal] = (p_cord + p_csf) * share
    out[2][canal] = (p_cord + p_csf) * (1.0 - share)

    # The cord is one tube with no CSF inside it, whatever its signal: a T2-bright lesion (myelopathy) or a dark one
    # must not cut it or hole it (without this guard one validation volume lost a third of its cord).
    from scipy import ndimage

    before, after = label == 1, np.argmax(out, axis=0) == 1
    axes = tuple(a for a in range(3) if a != si_axis)
    shrunk = after.sum(axis=axes) < 0.5 * before.sum(axis=axes)
    index = [slice(None)] * 4  # channels first
    index[1 + si_axis] = shrunk
    out[tuple(index)] = probabilities[tuple(index)]
    after = np.argmax(out, axis=0) == 1
    holes = np.stack([ndimage.binary_fill_holes(plane) for plane in np.moveaxis(after, si_axis, 0)])
    holes = np.moveaxis(holes, 0, si_axis) & ~after & canal
    out[1][holes], out[2][holes] = out[2][holes], out[1][holes]
    return out


def si_array_axis(volume: Volume) -> int:
    """The array axis (0, 1, 2 of ``(K, J, I)``) whose index axis runs most nearly head to foot."""
    return 2 - int(np.argmax(np.abs(volume.direction[2])))


def _labels_on_input_grid(probabilities: np.ndarray, grid: Volume, target: Volume, config: SegmentationConfig):
    """Arg-max label map on ``target``'s grid (``target.array``: the normalised image) from working-grid probabilities
    ``(C, K, J, I)``, cord and CSF refined by :func:`refine_cord_csf`.

    Background, cord, CSF and "any vertebral body" probabilities are interpolated linearly (sub-voxel boundaries); which
    level a body voxel has is carried by nearest neighbour. Interpolating 4 channels instead of all 10 more than halves
    the cost, and levels are re-assigned per body afterwards anyway.
    """
    grouped = np.concatenate([probabilities[:3], probabilities[3:].sum(axis=0, keepdims=True)])
    grouped = refine_cord_csf(
        _resample_probabilities(grouped, grid, target), target.array, config.intensity_weight, si_array_axis(target)
    )
    group = np.argmax(grouped, axis=0)
    classes = np.asarray(config.classes, dtype=np.uint8)
    labels = classes[np.minimum(group, 2)]
    if len(classes) > 3:
        level = grid.with_array(np.argmax(probabilities[3:], axis=0).astype(np.uint8))
        level = resample_like(level, target, "nearest").array
        labels = np.where(group == 3, classes[3:][level], labels)
    return labels.astype(np.uint8)


# --- post-processing ------------------------------------------------------------------------------------------------
def keep_largest_component(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Keep the largest 26-connected component of the union of ``values`` in ``labels`` ``(K, J, I)``; the rest of
    those values becomes background (0). Other values are untouched.

    The same as MONAI's ``KeepLargestConnectedComponent(independent=False)``, which needs scikit-image (not a dependency
    of this project); scipy's labelling does the same job.
    """
    from scipy import ndimage

    mask = np.isin(labels, list(values))
    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return labels.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    out = labels.copy()
    out[mask & (components != int(np.argmax(sizes)))] = 0
    return out


def keep_cord_chain(
    labels: np.ndarray,
    si_axis: int,
    spacing: Sequence[float],
    max_gap_mm: float = 15.0,
    max_offset_mm: float = 6.0,
    min_fraction: float = 0.05,
    max_overlap: float = 0.2,
) -> np.ndarray:
    """Keep the largest cord piece and the pieces that continue it head- or footwards; other cord becomes background.

    A compressed cord can be thin enough at the stenosis for the network to interrupt it, and keeping the largest
    piece alone then drops everything beyond the stenosis, the level a surgeon needs measured (one synthetic test
    volume lost half its cord this way, docs/results/segmentation.md). A piece (26-connected, at least
    ``min_fraction`` of the largest) joins the chain when it lies beyond the chain along the SI axis (at most
    ``max_overlap`` of its SI slices shared with the chain: a piece beside the cord is a false positive), within
    ``max_gap_mm`` of it, and its facing end is within ``max_offset_mm`` in-plane of the chain's end: a cord does not
    jump sideways.

    Args:
        labels: label map ``(K, J, I)``; only :data:`~cspineai.series.CORD` voxels change.
        si_axis: the array axis (0, 1, 2) that runs most nearly head to foot.
        spacing: voxel size of the array axes, ``(K, J, I)`` order (mm).
    """
    from scipy import ndimage

    cord = labels == CORD
    components, count = ndimage.label(cord, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return labels.copy()
    sizes = np.bincount(components.ravel())[1:]
    order = np.argsort(-sizes) + 1
    plane_axes = [a for a in range(3) if a != si_axis]
    plane_spacing = np.array([spacing[a] for a in plane_axes], dtype=float)
    n_si = labels.shape[si_axis]

    def centroid_mm(mask: np.ndarray, position: int) -> np.ndarray:
        points = np.argwhere(np.take(mask, position, axis=si_axis))  # (n, 2) in plane_axes order
        return points.mean(axis=0) * plane_spacing

    chain = components == order[0]
    covered = np.zeros(n_si, dtype=bool)
    covered[np.unique(np.nonzero(chain)[si_axis])] = True
    for label in order[1:]:
        if sizes[label - 1] < min_fraction * sizes[order[0] - 1]:
            break
        piece = components == label
        positions = np.unique(np.nonzero(piece)[si_axis])
        if covered[positions].sum() > max_overlap * len(positions):
            continue
        chain_positions = np.flatnonzero(covered)
        # The facing ends: the pair of SI positions (piece, chain) closest to each other.
        gaps = np.abs(positions[:, None] - chain_positions[None, :])
        p, c = np.unravel_index(int(np.argmin(gaps)), gaps.shape)
        if gaps[p, c] * spacing[si_axis] > max_gap_mm:
            continue
        offset = np.linalg.norm(centroid_mm(piece, positions[p]) - centroid_mm(chain, chain_positions[c]))
        if offset > max_offset_mm:
            continue
        chain |= piece
        covered[positions] = True
    out = labels.copy()
    out[cord & ~chain] = 0
    return out


def assign_vertebral_levels(labels: np.ndarray, volume: Volume, min_volume_mm3: float = 200.0) -> np.ndarray:
    """Relabel vertebral bodies so that levels run C2, C3, ... T1 from superior to inferior without repeats.

    The network predicts one class per level, but neighbouring bodies look alike and get confused. Anatomy is more
    reliable than those per-voxel votes: bodies in view are consecutive. So:

    1. every connected component of the union of body classes (6-connected, so bodies touching across a thin disc stay
       apart) is one vertebral body; components under ``min_volume_mm3`` are dropped;
    2. components are ordered by the SI position of their centroid, superior first, and numbered consecutively; where
       the distance to the next centroid is well above the median spacing (a body the network missed) the numbering
       skips accordingly (``round(distance / median)`` steps);
    3. one offset maps the numbering onto C2..T1: the offset whose levels agree best with the network's votes (each
       component's fraction of voxels predicted as that level, summed). Components falling outside C2..T1 (e.g. T2 in a
       long field of view) become background.

    Known limitation: two bodies merged into one component get one level.

    Args:
        labels: label map ``(K, J, I)`` with body values from :data:`cspineai.series.BODY_VALUES`.
        volume: the grid of ``labels`` (voxel size and SI positions).

    Returns:
        a new label map; values other than vertebral bodies are unchanged.
    """
    from scipy import ndimage

    body_values = np.array(list(BODY_VALUES.values()))
    is_body = np.isin(labels, body_values)
    out = labels.copy()
    out[is_body] = 0
    components, count = ndimage.label(is_body)
    if count == 0:
        return out
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(is_body, components, index)
    kept = index[sizes * float(np.prod(volume.spacing)) >= min_volume_mm3]
    if kept.size == 0:
        return out
    centroids_kji = np.array(ndimage.center_of_mass(is_body, components, kept)).reshape(-1, 3)
    si = index_to_world(volume, centroids_kji[:, ::-1])[:, 2]  # LPS z grows towards S
    order = np.argsort(-si)
    kept, si = kept[order], si[order]

    gaps = -np.diff(si)
    steps = np.ones(len(gaps), dtype=int)
    if len(gaps) >= 2:
        steps = np.maximum(1, np.round(gaps / np.median(gaps))).astype(int)
    position = np.concatenate([[0], np.cumsum(steps)])

    votes = np.stack([ndimage.sum_labels(labels == v, components, kept) for v in body_values], axis=1)
    votes = votes / np.maximum(votes.sum(axis=1, keepdims=True), 1)
    n_levels = len(body_values)
    best_offset, best_score = 0, -1.0
    for offset in range(-int(position[-1]), n_levels):
        level = position + offset
        inside = (level >= 0) & (level < n_levels)
        # Agreement first; among equal agreements keep more bodies, then the more superior numbering.
        score = votes[inside, level[inside]].sum() + 1e-6 * inside.sum()
        if score > best_score + 1e-12:
            best_offset, best_score = offset, score
    for component, level in zip(kept, position + best_offset, strict=True):
        if 0 <= level < n_levels:
            out[components == component] = body_values[level]
    return out


def load_segmentation_model(model_id: str = DEFAULT_MODEL_ID, version: str | None = None, device: str = "cpu"):
    """``(network in eval mode, SegmentationConfig)`` of a registered ``cordseg`` model (hash-checked by the
    registry)."""
    from .models.registry import load_model
    from .training.config import resolve_config
    from .training.tasks import get_task

    network, entry, state = load_model(model_id, version, device)
    config = resolve_config(dict(state["config"]), f"model {entry.id} {entry.version}")
    if config["task"] != "cordseg":
        raise CSpineModelError(f"model {entry.id} was trained for task {config['task']!r}, not cord segmentation")
    return network, get_task("cordseg").segmentation_config(config)


# --- the whole job --------------------------------------------------------------------------------------------------
def segment_cord(
    mri: Volume,
    model: Any = None,
    config: SegmentationConfig | None = None,
    device: str = "cpu",
    progress: ProgressCallback = no_progress,
) -> Volume:
    """Segment cord, CSF/canal and vertebral bodies C2..T1 of ``mri``; a label map on ``mri``'s grid.

    Args:
        mri: a T1- or T2-weighted MRI of the cervical spine, any orientation (sagittal, axial, oblique).
        model: a ``torch.nn.Module`` mapping ``(B, 1 + 2 * context_slices, *roi)`` normalised intensities to
            ``(B, len(classes), *roi)`` logits, or the id of a registered ``cordseg`` model (default
            :data:`DEFAULT_MODEL_ID`, the shipped one).
        config: the pre/post-processing the model was trained with (default: the registered model's, else
            :class:`SegmentationConfig`).
        device: torch device for the network.
        progress: callback ``(step, fraction, message)``.

    Returns:
        a ``uint8`` :class:`Volume` on ``mri``'s grid (same shape, spacing, origin, direction) with values of
        :data:`cspineai.series.SEGMENTATION_CLASSES`.

    Raises:
        CSpineInputError: ``mri`` is a CT, or no spinal cord is found (neck not in view, wrong image).
        CSpineModelError: the registered model is missing or altered, or the model does not match ``config``.
    """
    if model is None or isinstance(model, str):
        model, registered_config = load_segmentation_model(model or DEFAULT_MODEL_ID, device=device)
        config = config or registered_config
    config = config or SegmentationConfig()
    source = mri.source or mri.modality or "MRI"
    require_mri(mri)

    progress("segment", 0.05, "normalising and resampling to sagittal working slices")
    grid = working_grid(mri, config)
    normalised = normalise_intensity(mri, config.intensity_percentiles)
    image = resample_like(normalised, grid, "linear", default_value=0.0)

    progress("segment", 0.15, f"running the network on {grid.shape[0]} slices")
    probabilities = predict_probabilities(image.array, model, config, device)

    progress("segment", 0.8, "resampling to the input grid and cleaning up")
    labels = _labels_on_input_grid(probabilities, grid, normalised, config)
    labels = keep_largest_component(labels, [CORD, CSF])
    labels = keep_cord_chain(labels, si_array_axis(mri), mri.spacing[::-1])

    cord_mm3 = np.count_nonzero(labels == CORD) * float(np.prod(mri.spacing))
    if cord_mm3 < config.min_cord_volume_mm3:
        raise CSpineInputError(
            source,
            f"no spinal cord found ({cord_mm3:.0f} mm³ of cord-like tissue, at least {config.min_cord_volume_mm3:.0f} "
            "mm³ expected): check that the image is a T1 or T2 MRI with the cervical spine in view",
        )
    labels = assign_vertebral_levels(labels, mri, config.min_body_volume_mm3)
    progress("segment", 1.0, f"cord {cord_mm3 / 1000:.1f} cm³")
    result = mri.with_array(labels, modality="segmentation")
    return result


__all__ = [
    "DEFAULT_MODEL_ID",
    "SegmentationConfig",
    "load_segmentation_model",
    "WORKING_DIRECTION",
    "assign_vertebral_levels",
    "keep_cord_chain",
    "keep_largest_component",
    "normalise_intensity",
    "predict_probabilities",
    "refine_cord_csf",
    "require_mri",
    "segment_cord",
    "slice_context",
    "window_logits",
    "working_grid",
]
