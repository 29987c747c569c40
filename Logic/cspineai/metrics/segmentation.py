"""Segmentation figures on label maps: Dice and the 95th-percentile Hausdorff distance (HD95, mm), per label value.

Label maps are integer arrays indexed ``[k, j, i]`` (the :class:`cspineai.volume.Volume` convention, 2-D ``[j, i]``
slices also accepted) with ``spacing`` given as ``(si, sj, sk)`` mm like a Volume's; the functions reorder it to the
array's axes. The distances come from MONAI (:func:`monai.metrics.compute_hausdorff_distance`, surface voxels, Euclidean
distance in mm), Dice from the voxel counts.

Empty structures: when a label is absent from both maps Dice is ``nan`` (nothing to score, so it does not pull a mean
up or down) and so is HD95; when it is present in one map only, Dice is 0 and HD95 ``inf``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import CSpineInputError


def _pair(pred, ref) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise CSpineInputError("segmentation", f"prediction shape {pred.shape} differs from reference {ref.shape}")
    if pred.ndim not in (2, 3):
        raise CSpineInputError("segmentation", f"label maps must be 2-D or 3-D, not {pred.ndim}-D")
    return pred, ref


def _labels_of(pred: np.ndarray, ref: np.ndarray, labels: Iterable[int] | None) -> list[int]:
    if labels is None:
        labels = sorted(set(np.unique(pred).tolist()) | set(np.unique(ref).tolist()))
    return [int(v) for v in labels if int(v) != 0]


def dice_scores(pred, ref, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice 2|P∩R| / (|P| + |R|) per label value (background 0 excluded; default: every value present in either map)."""
    pred, ref = _pair(pred, ref)
    out = {}
    for value in _labels_of(pred, ref, labels):
        p, r = pred == value, ref == value
        total = int(p.sum()) + int(r.sum())
        out[value] = float("nan") if total == 0 else 2.0 * int((p & r).sum()) / total
    return out


def hd95_scores(
    pred, ref, spacing: Sequence[float] | None = None, labels: Iterable[int] | None = None
) -> dict[int, float]:
    """HD95 in mm per label value (symmetric: the larger of the two directed 95th percentiles, as MONAI computes it).

    Args:
        pred, ref: label maps ``[k, j, i]`` (or ``[j, i]``).
        spacing: ``(si, sj[, sk])`` mm, a Volume's order; ``None`` means 1 mm voxels.
    """
    import torch
    from monai.metrics import compute_hausdorff_distance

    pred, ref = _pair(pred, ref)
    array_spacing = None if spacing is None else [float(s) for s in tuple(spacing)[: pred.ndim][::-1]]
    if array_spacing is not None and len(array_spacing) != pred.ndim:
        raise CSpineInputError("spacing", f"{len(tuple(spacing))} values for a {pred.ndim}-D label map")
    out = {}
    for value in _labels_of(pred, ref, labels):
        p, r = pred == value, ref == value
        if not p.any() and not r.any():
            out[value] = float("nan")
        elif not p.any() or not r.any():
            out[value] = float("inf")
        else:
            # MONAI expects one-hot (B, C, *spatial) with background as channel 0; include_background=False drops it.
            yp = torch.from_numpy(np.stack([~p, p])[None].astype(np.float32))
            yr = torch.from_numpy(np.stack([~r, r])[None].astype(np.float32))
            hd = compute_hausdorff_distance(yp, yr, percentile=95, spacing=array_spacing)
            out[value] = float(hd.reshape(-1)[0])
    return out


def segmentation_report(
    pred, ref, spacing: Sequence[float] | None = None, labels: Iterable[int] | None = None, names: dict | None = None
) -> dict[str, float]:
    """Flat ``{"dice_<name>": .., "hd95_<name>": ..}`` per label plus ``dice_mean``/``hd95_mean`` over finite values.

    ``names`` maps label values to short names (default: the value itself, e.g. ``dice_1``).
    """
    dice = dice_scores(pred, ref, labels)
    hd = hd95_scores(pred, ref, spacing, list(dice))
    report: dict[str, float] = {}
    for value in dice:
        name = (names or {}).get(value, str(value))
        report[f"dice_{name}"] = dice[value]
        report[f"hd95_{name}"] = hd[value]
    finite_dice = [v for v in dice.values() if np.isfinite(v)]
    finite_hd = [v for v in hd.values() if np.isfinite(v)]
    report["dice_mean"] = float(np.mean(finite_dice)) if finite_dice else float("nan")
    report["hd95_mean"] = float(np.mean(finite_hd)) if finite_hd else float("nan")
    return report
