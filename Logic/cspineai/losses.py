"""Registration losses (methods §3, paper 000 §2.4); the classifier's cross-entropy stays ``torch.nn.CrossEntropyLoss``.

All image tensors are ``(B, C, D, H, W)`` on the fixed (MRI) grid; displacement fields are ``(B, 3, D, H, W)`` in
normalised coordinates (channels x, y, z = i, j, k, ``align_corners=True``: -1 and +1 are the first and last voxel
centres), the convention of :mod:`cspineai.nn.fpran`.

- :func:`local_ncc_loss`: local normalised cross-correlation, window 9^3 (the paper's L_sim), border-correct.
- :func:`mind_ssc` / :func:`mind_loss`: the modality-independent neighbourhood descriptor, self-similarity context
  variant (Heinrich et al., MICCAI 2013). MONAI has no MIND, so it is written here (a page, after the authors' own
  PyTorch version used in Learn2Reg).
- :func:`gradient_loss`: L_reg = (E[(dψ/dx)^2] + E[(dψ/dy)^2] + E[(dψ/dz)^2]) / 3 with forward differences. MONAI's
  ``DiffusionLoss`` is not used: it refuses axes of two voxels or fewer, which thick-slice grids have, and sums the
  three terms instead of averaging them.
- :func:`warped_label_dice_loss`, :func:`landmark_loss`: optional semi-supervised terms for synthetic pairs whose true
  correspondence is known.
- :class:`RegistrationLoss`: the weighted sum, with its weights as data (:class:`RegistrationLossWeights`).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812


def box_mean(image: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window``^3 box around each voxel of ``(B, C, D, H, W)``, counting only voxels inside the image.

    Separable (three 1-D means); the clipped box is still a box, so the separable mean of the valid voxels is exact.
    """
    r = window // 2
    for dim, kernel in ((2, (window, 1, 1)), (3, (1, window, 1)), (4, (1, 1, window))):
        if image.shape[dim] > 1:
            padding = tuple(r if k > 1 else 0 for k in kernel)
            image = F.avg_pool3d(image, kernel, stride=1, padding=padding, count_include_pad=False)
    return image


def local_ncc_loss(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """Negative mean squared local NCC over ``window``^3 boxes: -1 for identical (non-flat) images, ~0 for unrelated.

    Squared, as MONAI's ``LocalNormalizedCrossCorrelationLoss``, so an inverted contrast (bone bright in CT, dark in T1)
    also scores -1. MONAI's version is not used because it pads with zeros: near the borders both images then share
    the padded zeros, which makes unrelated volumes look correlated (-0.82 on two unrelated 12 x 20 x 20 noise volumes,
    Testing/test_registration_losses.py), and thick-slice MRI grids with about 20 slices are mostly border for a
    9-voxel window. Here each box counts only the voxels inside the image. ``window`` must be odd.
    """
    if window % 2 != 1:
        raise ValueError(f"the NCC window must be odd, got {window}")
    mean_f, mean_w = box_mean(fixed, window), box_mean(warped, window)
    cross = box_mean(fixed * warped, window) - mean_f * mean_w
    var_f = (box_mean(fixed * fixed, window) - mean_f**2).clamp_min(eps)
    var_w = (box_mean(warped * warped, window) - mean_w**2).clamp_min(eps)
    return -(cross * cross / (var_f * var_w)).mean()


def _mind_pairs(dilation: int) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """The 12 pairs of six-neighbourhood offsets at distance sqrt(2) * dilation (MIND-SSC's self-similarity edges)."""
    six = [tuple(dilation * s * (a == axis) for a in range(3)) for axis in range(3) for s in (-1, 1)]
    return [
        (p, q)
        for p, q in itertools.combinations(six, 2)
        if sum((a - b) ** 2 for a, b in zip(p, q, strict=True)) == 2 * dilation**2
    ]


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC descriptor: ``(B, 1, D, H, W)`` -> ``(B, 12, D, H, W)`` in (0, 1].

    Each channel is ``exp(-SSD_p / V)``: the patch distance (box of ``2 * radius + 1`` voxels) between two neighbours of
    a voxel, normalised by the local mean distance ``V``. It depends on local structure, not on the intensity
    mapping, so CT and MRI can be compared directly. Offsets in voxels (``dilation``); replicate padding
    at the borders.
    """
    if image.ndim != 5 or image.shape[1] != 1:
        raise ValueError(f"mind_ssc expects (B, 1, D, H, W), got {tuple(image.shape)}")
    pad = dilation
    padded = F.pad(image, [pad] * 6, mode="replicate")
    d, h, w = image.shape[2:]

    def shifted(offset: tuple[int, int, int]) -> torch.Tensor:
        ox, oy, oz = offset  # (x, y, z) = (W, H, D)
        return padded[:, :, pad + oz : pad + oz + d, pad + oy : pad + oy + h, pad + ox : pad + ox + w]

    squared = torch.cat([(shifted(p) - shifted(q)) ** 2 for p, q in _mind_pairs(dilation)], dim=1)
    ssd = F.avg_pool3d(F.pad(squared, [radius] * 6, mode="replicate"), kernel_size=2 * radius + 1, stride=1)
    ssd = ssd - ssd.min(dim=1, keepdim=True).values
    variance = ssd.mean(dim=1, keepdim=True)
    # Bound the local variance relative to its image mean so flat regions neither blow up nor vanish (authors' choice).
    mean_var = variance.mean().detach()
    variance = torch.clamp(variance, min=float(mean_var) * 1e-3 + 1e-12, max=float(mean_var) * 1e3 + 1e-12)
    return torch.exp(-ssd / variance)


def mind_loss(fixed: torch.Tensor, warped: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """Mean squared difference of the MIND-SSC descriptors of two single-channel images (0 when they match)."""
    return torch.mean((mind_ssc(fixed, radius, dilation) - mind_ssc(warped, radius, dilation)) ** 2)


def gradient_loss(displacement: torch.Tensor) -> torch.Tensor:
    """L_reg: mean squared forward difference of ``(B, 3, D, H, W)`` along x, y, z, averaged over the axes.

    An axis of one voxel has no difference and contributes zero.
    """
    terms = []
    for dim in (4, 3, 2):  # x = W, y = H, z = D
        if displacement.shape[dim] > 1:
            terms.append(torch.diff(displacement, dim=dim).pow(2).mean())
        else:
            terms.append(displacement.new_zeros(()))
    return sum(terms) / 3.0


def warped_label_dice_loss(warped_onehot: torch.Tensor, fixed_onehot: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss between moving labels warped with *linear* sampling (so it has a gradient) and fixed labels.

    Both ``(B, L, D, H, W)`` one-hot (channel 0 background, excluded).
    """
    from monai.losses import DiceLoss

    return DiceLoss(include_background=False, reduction="mean")(warped_onehot, fixed_onehot)


def landmark_loss(
    mapping: torch.Tensor,
    fixed_points: torch.Tensor,
    moving_points: torch.Tensor,
    mm_per_unit: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean distance (mm) between mapped fixed landmarks and their true moving positions.

    Args:
        mapping: ``(B, D, H, W, 3)`` moving-grid normalised coordinates of every fixed voxel (a ``grid_sample`` grid).
        fixed_points: ``(B, N, 3)`` landmarks in fixed normalised coordinates (x, y, z).
        moving_points: ``(B, N, 3)`` the same landmarks in moving normalised coordinates.
        mm_per_unit: ``(B, 3)`` mm per normalised unit along the moving grid's x, y, z
            (``spacing * (size - 1) / 2``; exact for an orthonormal direction matrix).
        valid: ``(B, N)`` boolean, landmarks to use (default all).
    """
    b, n, _ = fixed_points.shape
    sampled = F.grid_sample(
        mapping.permute(0, 4, 1, 2, 3), fixed_points.reshape(b, n, 1, 1, 3), mode="bilinear", align_corners=True
    )  # (B, 3, N, 1, 1)
    predicted = sampled.reshape(b, 3, n).transpose(1, 2)
    distance = torch.linalg.vector_norm((predicted - moving_points) * mm_per_unit[:, None, :], dim=-1)
    if valid is None:
        return distance.mean()
    valid = valid.to(distance.dtype)
    return (distance * valid).sum() / valid.sum().clamp_min(1.0)


SIMILARITIES = {"ncc": local_ncc_loss, "mind": mind_loss}


@dataclasses.dataclass
class RegistrationLossWeights:
    """Weights of L = λ_sim L_sim + λ_reg L_reg [+ λ_dice L_dice + λ_landmark L_landmark] (paper: 1, 1, and no others).

    ``similarity`` is ``"ncc"`` (paper) or ``"mind"`` (modality-independent). ``landmark`` multiplies a distance in mm,
    so its useful size is about a hundredth of the others.
    """

    similarity: str = "ncc"
    sim: float = 1.0
    reg: float = 1.0
    dice: float = 0.0
    landmark: float = 0.0
    ncc_window: int = 9

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> RegistrationLossWeights:
        config = dict(config or {})
        unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown registration loss settings: {sorted(unknown)}")
        weights = cls(**config)
        if weights.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {sorted(SIMILARITIES)}, not {weights.similarity!r}")
        return weights


class RegistrationLoss(torch.nn.Module):
    """The weighted registration objective; returns ``(total, {term: value})`` so each term can be logged."""

    def __init__(self, weights: RegistrationLossWeights | dict[str, Any] | None = None):
        super().__init__()
        if not isinstance(weights, RegistrationLossWeights):
            weights = RegistrationLossWeights.from_dict(weights)
        self.weights = weights

    def forward(
        self,
        fixed: torch.Tensor,
        warped: torch.Tensor,
        displacement: torch.Tensor,
        warped_onehot: torch.Tensor | None = None,
        fixed_onehot: torch.Tensor | None = None,
        landmarks: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``landmarks``: the keyword arguments of :func:`landmark_loss` (mapping, fixed_points, moving_points, ...)."""
        w = self.weights
        if w.similarity == "ncc":
            sim = local_ncc_loss(fixed, warped, w.ncc_window)
        else:
            sim = mind_loss(fixed, warped)
        terms = {"sim": sim, "reg": gradient_loss(displacement)}
        if w.dice > 0 and warped_onehot is not None and fixed_onehot is not None:
            terms["dice"] = warped_label_dice_loss(warped_onehot, fixed_onehot)
        if w.landmark > 0 and landmarks is not None:
            terms["landmark"] = landmark_loss(**landmarks)
        total = sum(getattr(w, name) * value for name, value in terms.items())
        return total, terms
