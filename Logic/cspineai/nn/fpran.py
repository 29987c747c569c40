"""FPRAN: feature-pyramid registration auxiliary network (paper 000 §2.3, methods §3).

Aligns the axial CT to the sagittal MRI, coarse to fine, on two feature pyramids ``[f1, f2, f3, f4]`` (fine to coarse),
each in its modality's own canonically reoriented working grid (``cspineai.geometry.reorient``).

Coordinate convention (used by every function here and by :mod:`cspineai.losses`):

- Tensors are ``(B, C, D, H, W)`` = ``[k, j, i]`` of the working grid.
- *Normalised coordinates* ``u = (x, y, z)`` address the i, j, k axes (``grid_sample`` order) with
  ``align_corners=True``: ``-1`` and ``+1`` are the centres of the first and last voxels of the *full-resolution image*.
  Every pyramid level is taken to span the same extent, so a displacement in normalised units means the same physical
  shift at every level and upsampling a field needs no rescaling.
- The base transform ``R`` (4x4) maps MRI normalised coordinates to CT normalised coordinates using only the two image
  headers (index -> LPS matrices); the learnable refinement ``L`` acts before it, ``A = R · L``.
- Displacements ``ψ`` live on the MRI grid, in MRI normalised units, and are applied before the affine: the CT point
  matching MRI point ``u`` is ``A · (u + ψ(u))``. A fresh network has ``L = I`` and ``ψ = 0`` (last layers
  zero-initialised), so it reproduces the header alignment exactly.

The network never sees millimetres; :mod:`cspineai.registration` converts its mapping into a displacement field in mm.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from monai.networks.blocks import Convolution
from torch import nn

#: Options of an :class:`FPRAN` head and their defaults (the classifier's joint head and the registration task's
#: network read them from configurations).
FPRAN_DEFAULTS: dict = {"hidden": 32, "radius": [1, 2, 2], "affine_bound": 0.25, "paired_affine": True}

# --- geometry: header-derived base transform and grids ---------------------------------------------------------------


def index_to_normalised(size_ijk: Sequence[int]) -> np.ndarray:
    """4x4 matrix mapping a continuous index ``(i, j, k, 1)`` to normalised ``(x, y, z, 1)`` (``align_corners=True``).

    An axis of one voxel maps index 0 to 0 (``grid_sample`` samples that voxel for any coordinate).
    """
    m = np.eye(4)
    for axis, n in enumerate(size_ijk):
        if n > 1:
            m[axis, axis] = 2.0 / (n - 1)
            m[axis, 3] = -1.0
    return m


def base_transform(
    fixed_ijk_to_lps: np.ndarray,
    fixed_size_ijk: Sequence[int],
    moving_ijk_to_lps: np.ndarray,
    moving_size_ijk: Sequence[int],
) -> np.ndarray:
    """R: fixed (MRI) normalised coordinates -> moving (CT) normalised coordinates through physical space (4x4).

    Both images are assumed to be in one patient frame (their headers); R contains the axial -> sagittal rotation (an
    axis permutation for straight acquisitions), the ratio of fields of view and the offset between them.
    """
    fixed_norm = index_to_normalised(fixed_size_ijk)
    moving_norm = index_to_normalised(moving_size_ijk)
    return moving_norm @ np.linalg.inv(moving_ijk_to_lps) @ fixed_ijk_to_lps @ np.linalg.inv(fixed_norm)


def base_transform_from_volumes(fixed, moving) -> np.ndarray:
    """:func:`base_transform` of two :class:`cspineai.volume.Volume` working grids (MRI first)."""
    return base_transform(fixed.ijk_to_lps, fixed.size_ijk, moving.ijk_to_lps, moving.size_ijk)


def identity_grid(spatial: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``(1, D, H, W, 3)`` normalised coordinates (x, y, z) of the voxel centres of a ``(D, H, W)`` grid."""
    axes = [torch.linspace(-1.0, 1.0, n, dtype=like.dtype, device=like.device) if n > 1 else like.new_zeros(1)
            for n in spatial]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1)[None]


def apply_affine(affine: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``(B, 4, 4)`` affines to ``(B, ..., 3)`` points."""
    b = points.shape[0]
    flat = points.reshape(b, -1, 3)
    moved = flat @ affine[:, :3, :3].transpose(1, 2) + affine[:, None, :3, 3]
    return moved.reshape(points.shape)


def voxel_scale(spatial: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``(1, 3, 1, 1, 1)`` normalised units per voxel along x, y, z of a ``(D, H, W)`` grid."""
    scale = [2.0 / (n - 1) if n > 1 else 0.0 for n in reversed(list(spatial))]
    return torch.tensor(scale, dtype=like.dtype, device=like.device).view(1, 3, 1, 1, 1)


def resize_field(field: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """Trilinear resize of a ``(B, 3, D, H, W)`` normalised displacement field (values unchanged: normalised units)."""
    if tuple(field.shape[2:]) == tuple(spatial):
        return field
    return F.interpolate(field, size=tuple(spatial), mode="trilinear", align_corners=True)


def sample_moving(moving: torch.Tensor, affine: torch.Tensor, displacement: torch.Tensor | None,
                  spatial: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Moving image/features sampled at ``A · (u + ψ(u))`` for every voxel ``u`` of a fixed grid of size ``spatial``.

    This is the spatial transformer of the paper. MONAI's ``Warp`` is not used because it assumes that the moving and
    fixed images share one voxel grid (a dense displacement in voxels); here they are two acquisitions with different
    grids, joined by the affine.

    Args:
        moving: ``(B, C, Dm, Hm, Wm)`` on the moving (CT) grid.
        affine: ``(B, 4, 4)`` fixed normalised -> moving normalised.
        displacement: ``(B, 3, D, H, W)`` in fixed normalised units (resized to ``spatial`` if needed), or None.
        spatial: ``(D, H, W)`` of the fixed grid to sample on.
        mode: ``"bilinear"`` (trilinear) or ``"nearest"`` (labels).

    Returns:
        ``(B, C, D, H, W)``; points outside the moving image read 0.
    """
    grid = mapping_grid(affine, displacement, spatial, moving)
    return F.grid_sample(moving, grid, mode=mode, padding_mode="zeros", align_corners=True)


def mapping_grid(affine: torch.Tensor, displacement: torch.Tensor | None, spatial: Sequence[int],
                 like: torch.Tensor) -> torch.Tensor:
    """``(B, D, H, W, 3)`` moving normalised coordinates ``A · (u + ψ(u))`` of the fixed voxels."""
    points = identity_grid(spatial, like).expand(affine.shape[0], *spatial, 3)
    if displacement is not None:
        points = points + resize_field(displacement, spatial).permute(0, 2, 3, 4, 1)
    return apply_affine(affine, points)


# --- building blocks ----------------------------------------------------------------------------------------------


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
    act = ("leakyrelu", {"negative_slope": 0.2})
    return Convolution(3, in_channels, out_channels, kernel_size=kernel_size, act=act, norm="instance")


def _zero_head(in_channels: int, out_channels: int) -> nn.Conv3d:
    """Final 3x3x3 convolution, zero-initialised so that the untrained network predicts nothing (header alignment)."""
    head = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def local_correlation(fixed: torch.Tensor, moving: torch.Tensor, radius: Sequence[int] = (1, 2, 2)) -> torch.Tensor:
    """Cost volume: mean over channels of ``fixed(u) * moving(u + o)`` for every offset ``o`` within ``radius``.

    Args:
        fixed, moving: ``(B, C, D, H, W)`` on one grid (the moving features already warped).
        radius: search radius in voxels along (D, H, W); thick-slice grids get a smaller one along D.

    Returns:
        ``(B, prod(2r + 1), D, H, W)``. Memory is that of the output, independent of the grid size squared (unlike
        global attention), which is why the fine levels use it.
    """
    rd, rh, rw = radius
    padded = F.pad(moving, [rw, rw, rh, rh, rd, rd])
    d, h, w = fixed.shape[2:]
    costs = [
        (fixed * padded[:, :, od : od + d, oh : oh + h, ow : ow + w]).mean(dim=1, keepdim=True)
        for od in range(2 * rd + 1)
        for oh in range(2 * rh + 1)
        for ow in range(2 * rw + 1)
    ]
    return torch.cat(costs, dim=1)


class AffineRefinement(nn.Module):
    """L: three convolutions + pooling -> 12 affine parameters, tanh-bounded, added to the identity (4x4).

    The paper feeds L the CT features alone; a function of one image cannot know where the other one lies, so by default
    (``paired=True``) L sees the MRI features and the CT features already mapped by R, concatenated. ``paired=False``
    restores the paper's form for its ablation.

    Args:
        channels: channels of each input feature map.
        hidden: channels of the convolutions.
        bound: largest change of each matrix entry / translation (normalised units), ``bound * tanh``.
        paired: see above.
    """

    def __init__(self, channels: int, hidden: int = 32, bound: float = 0.25, paired: bool = True):
        super().__init__()
        self.paired, self.bound = paired, bound
        in_channels = 2 * channels if paired else channels
        self.features = nn.Sequential(_conv(in_channels, hidden), _conv(hidden, hidden), _conv(hidden, hidden))
        self.params = nn.Linear(hidden, 12)
        nn.init.zeros_(self.params.weight)
        nn.init.zeros_(self.params.bias)

    def forward(self, mri: torch.Tensor, ct_on_mri: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
        """``(B, C, ...)`` features -> ``(B, 4, 4)`` refinement (identity at initialisation)."""
        x = torch.cat([mri, ct_on_mri], dim=1) if self.paired else ct
        pooled = F.adaptive_avg_pool3d(self.features(x), 1).flatten(1)
        delta = self.bound * torch.tanh(self.params(pooled)).view(-1, 3, 4)
        eye = torch.eye(4, dtype=x.dtype, device=x.device).expand(x.shape[0], 4, 4).clone()
        eye[:, :3, :] = eye[:, :3, :] + delta
        return eye


class CrossAttentionSAM(nn.Module):
    """Level-4 spatial alignment module: enhance, affine-map the CT features, cross-attend, predict ψ4.

    Queries come from the MRI features, keys and values from the CT features mapped onto the MRI grid by ``A = R · L``.
    Besides the attended CT features the head receives the attention's expected match position minus the query position
    (a soft-argmax displacement, in voxels), which gives it a direct geometric cue. Global attention costs
    ``(D H W)^2`` memory, affordable only on the coarsest grid.

    Args:
        ct_channels, mri_channels: channels of f4 of each branch.
        hidden: channels after enhancement and of the attention.
        affine_bound, paired_affine: see :class:`AffineRefinement`.
        max_tokens: refuse grids with more voxels than this (memory bound of the global attention).
    """

    def __init__(self, ct_channels: int, mri_channels: int, hidden: int = 32, affine_bound: float = 0.25,
                 paired_affine: bool = True, max_tokens: int = 8192):
        super().__init__()
        self.max_tokens = max_tokens
        self.enhance_ct = _conv(ct_channels, hidden)
        self.enhance_mri = _conv(mri_channels, hidden)
        self.affine = AffineRefinement(hidden, hidden, affine_bound, paired_affine)
        self.position = nn.Conv3d(3, hidden, kernel_size=1)
        self.query = nn.Conv3d(hidden, hidden, kernel_size=1)
        self.key = nn.Conv3d(hidden, hidden, kernel_size=1)
        self.value = nn.Conv3d(hidden, hidden, kernel_size=1)
        self.fuse = _conv(2 * hidden + 3, hidden)
        self.head = _zero_head(hidden, 3)

    def forward(self, ct: torch.Tensor, mri: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ct`` (B, Cc, ...) on the CT level-4 grid, ``mri`` (B, Cm, D, H, W), ``base`` R (B, 4, 4).

        Returns ``(ψ4, A)``: ``(B, 3, D, H, W)`` in MRI normalised units and the ``(B, 4, 4)`` affine.
        """
        spatial = tuple(mri.shape[2:])
        n = math.prod(spatial)
        if n > self.max_tokens:
            raise ValueError(f"level-4 grid {spatial} has {n} voxels, over the attention's bound {self.max_tokens}")
        ct_e, mri_e = self.enhance_ct(ct), self.enhance_mri(mri)
        ct_by_base = sample_moving(ct_e, base, None, spatial)
        affine = base @ self.affine(mri_e, ct_by_base, ct_e)
        ct_on_mri = sample_moving(ct_e, affine, None, spatial)

        grid = identity_grid(spatial, mri).permute(0, 4, 1, 2, 3).expand(mri.shape[0], 3, *spatial)
        pos = self.position(grid)
        q = (self.query(mri_e) + pos).flatten(2).transpose(1, 2)  # (B, N, C)
        k = (self.key(ct_on_mri) + pos).flatten(2)  # (B, C, N)
        v = self.value(ct_on_mri).flatten(2).transpose(1, 2)  # (B, N, C)
        attention = torch.softmax(q @ k / math.sqrt(q.shape[-1]), dim=-1)  # (B, N, N)
        attended = (attention @ v).transpose(1, 2).reshape(mri_e.shape)
        coords = grid.flatten(2).transpose(1, 2)  # (B, N, 3)
        soft_match = (attention @ coords - coords).transpose(1, 2).reshape(grid.shape)
        scale = voxel_scale(spatial, mri)
        soft_match_voxels = soft_match / torch.where(scale > 0, scale, torch.ones_like(scale))

        step_voxels = self.head(self.fuse(torch.cat([mri_e, attended, soft_match_voxels], dim=1)))
        return step_voxels * scale, affine


class CorrelationSAM(nn.Module):
    """Levels 3..1: Δψ from the local correlation of MRI features with CT features warped by the coarser estimate.

    Args:
        ct_channels, mri_channels: channels of this level's features.
        hidden: channels of the projections and of the head.
        radius: correlation search radius in voxels along (D, H, W).
    """

    def __init__(self, ct_channels: int, mri_channels: int, hidden: int = 16, radius: Sequence[int] = (1, 2, 2)):
        super().__init__()
        self.radius = tuple(radius)
        self.project_ct = nn.Conv3d(ct_channels, hidden, kernel_size=1)
        self.project_mri = nn.Conv3d(mri_channels, hidden, kernel_size=1)
        n_costs = math.prod(2 * r + 1 for r in self.radius)
        self.fuse = nn.Sequential(_conv(n_costs + 2 * hidden + 3, hidden), _conv(hidden, hidden))
        self.head = _zero_head(hidden, 3)

    def forward(self, ct: torch.Tensor, mri: torch.Tensor, affine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """ψ_i = SAM(f_CT ∘ ψ_{i+1}, f_MRI) + up(ψ_{i+1}); all fields ``(B, 3, D, H, W)`` in MRI normalised units."""
        spatial = tuple(mri.shape[2:])
        up = resize_field(coarse, spatial)
        ct_warped = sample_moving(self.project_ct(ct), affine, up, spatial)
        mri_p = self.project_mri(mri)
        # Unit-variance features make the correlation a cosine-like similarity whatever the backbone's scale.
        cost = local_correlation(F.instance_norm(mri_p), F.instance_norm(ct_warped), self.radius)
        scale = voxel_scale(spatial, mri)
        up_voxels = up / torch.where(scale > 0, scale, torch.ones_like(scale))
        step_voxels = self.head(self.fuse(torch.cat([cost, mri_p, ct_warped, up_voxels], dim=1)))
        return up + step_voxels * scale


@dataclasses.dataclass
class FPRANOutput:
    """What FPRAN returns (all on the MRI image grid unless stated).

    Attributes:
        affine: ``(B, 4, 4)`` A = R · L, MRI normalised -> CT normalised.
        displacement: ``(B, 3, D, H, W)`` the finest ψ (ψ1, or ψ0 with the image level) upsampled to the MRI image
            grid, MRI normalised units.
        displacement_voxels: the same in MRI image voxels (L_reg is computed on it: λ_reg then is grid-independent).
        mapping: ``(B, D, H, W, 3)`` CT normalised coordinates of every MRI voxel, ``A · (u + ψ(u))`` with that ψ.
        warped_ct: ``(B, C, D, H, W)`` the CT image sampled through ``mapping`` (X̂_CT), when the CT image was given.
        levels: ψ4, ψ3, ψ2, ψ1 (and ψ0) on their own grids (coarse to fine).
    """

    affine: torch.Tensor
    displacement: torch.Tensor
    displacement_voxels: torch.Tensor
    mapping: torch.Tensor
    warped_ct: torch.Tensor | None
    levels: list[torch.Tensor]


#: Channels of the image-level SAM (see :class:`FPRAN`).
IMAGE_LEVEL_HIDDEN = 8


class FPRAN(nn.Module):
    """Four SAMs, coarse to fine: cross-attention at level 4, local correlation at levels 3..1.

    A fifth level (the registration-only network's ``image_level``) adds a correlation SAM on features at the working
    image grid itself, ψ₀; without it the output is ψ₁ upsampled, as in the paper.

    Args:
        ct_channels, mri_channels: channels of f1..f4 (or f0..f4) of the CT and MRI pyramids (fine to coarse).
        hidden: channels of the level-4 attention; finer levels use ``hidden // 2``.
        radius: local correlation radius (D, H, W) in voxels at levels 3..1 (the image level: one voxel).
        affine_bound, paired_affine: see :class:`AffineRefinement`.
    """

    def __init__(self, ct_channels: Sequence[int], mri_channels: Sequence[int], hidden: int = 32,
                 radius: Sequence[int] = (1, 2, 2), affine_bound: float = 0.25, paired_affine: bool = True):
        super().__init__()
        if len(ct_channels) != len(mri_channels) or len(ct_channels) not in (4, 5):
            raise ValueError("FPRAN needs four (or five, with the image level) pyramid levels per branch")
        self.level4 = CrossAttentionSAM(ct_channels[-1], mri_channels[-1], hidden, affine_bound, paired_affine)
        # Levels 3..1 at indices -2..-4; the image level (five levels) is the last entry, so a four-level model's
        # weights keep their names in a five-level one.
        self.fine = nn.ModuleList(
            CorrelationSAM(ct_channels[i], mri_channels[i], max(hidden // 2, 4), radius) for i in (-2, -3, -4)
        )
        if len(ct_channels) == 5:
            # At the image grid the SAM only refines (residual errors of ~1-2 mm): a radius of one voxel and few
            # channels keep it cheap, since its 3x3x3 fusion runs on 8x more voxels than level 1's.
            self.fine.append(CorrelationSAM(ct_channels[0], mri_channels[0], IMAGE_LEVEL_HIDDEN, (1, 1, 1)))

    def forward(self, ct_pyramid: Sequence[torch.Tensor], mri_pyramid: Sequence[torch.Tensor], base: torch.Tensor,
                ct_image: torch.Tensor | None = None, mri_size: Sequence[int] | None = None) -> FPRANOutput:
        """Register the CT pyramid to the MRI pyramid.

        Args:
            ct_pyramid, mri_pyramid: ``[f1, f2, f3, f4]`` (or ``[f0, ..., f4]``) each ``(B, C_l, D_l, H_l, W_l)`` in its
                own working grid.
            base: R, ``(B, 4, 4)`` or ``(4, 4)`` (:func:`base_transform`).
            ct_image: ``(B, C, Dc, Hc, Wc)`` CT working image to warp (optional).
            mri_size: ``(D, H, W)`` of the MRI working image (default: the grid of the finest level).
        """
        if len(ct_pyramid) != len(self.fine) + 1 or len(mri_pyramid) != len(self.fine) + 1:
            raise ValueError(f"FPRAN was built for {len(self.fine) + 1} pyramid levels, got {len(ct_pyramid)} and "
                             f"{len(mri_pyramid)}")
        b = mri_pyramid[0].shape[0]
        base = base.to(mri_pyramid[0]).expand(b, 4, 4) if base.ndim == 2 else base.to(mri_pyramid[0])
        psi, affine = self.level4(ct_pyramid[-1], mri_pyramid[-1], base)
        levels = [psi]
        for sam, i in zip(self.fine, range(len(self.fine) - 1, -1, -1), strict=True):
            psi = sam(ct_pyramid[i], mri_pyramid[i], affine, psi)
            levels.append(psi)
        spatial = tuple(mri_size) if mri_size is not None else tuple(mri_pyramid[0].shape[2:])
        displacement = resize_field(psi, spatial)
        scale = voxel_scale(spatial, displacement)
        displacement_voxels = displacement / torch.where(scale > 0, scale, torch.ones_like(scale))
        mapping = mapping_grid(affine, displacement, spatial, displacement)
        warped = None
        if ct_image is not None:
            warped = F.grid_sample(ct_image.to(mapping), mapping, mode="bilinear", padding_mode="zeros",
                                   align_corners=True)
        return FPRANOutput(affine, displacement, displacement_voxels, mapping, warped, levels)


# --- registration-only mode -------------------------------------------------------------------------------------


def _stage_stride(depth: int, kernel: int) -> tuple[int, int, int]:
    """Halve in-plane always; halve the slice axis only while it is longer than the kernel (methods §2)."""
    return (2 if depth > kernel else 1, 2, 2)


class LightPyramidEncoder(nn.Module):
    """A small four-level conv pyramid for registration without the classifier's backbones.

    Every level, the first included, halves the in-plane axes and the slice axis while it is longer than the kernel, as
    the backbone does; the final displacement is upsampled from level 1 (half resolution), which keeps a forward pass
    within the seconds budget on two CPU cores. With ``image_level`` a convolution at the image grid adds f0 in front
    of the pyramid, for FPRAN's image-grid SAM.

    Args:
        in_channels: image channels.
        channels: output channels of f1..f4.
        image_level: also return f0 (``channels[0]`` channels at the image grid).
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (8, 16, 16, 32), image_level: bool = False):
        super().__init__()
        self.channels = tuple(channels)
        widths = (in_channels, *channels)
        # Plain convolutions for the strided steps: the stride along the slice axis is chosen per input (see forward).
        self.down = nn.ModuleList(nn.Conv3d(widths[i], widths[i + 1], kernel_size=3, padding=1) for i in range(4))
        self.refine = nn.ModuleList(_conv(c, c) for c in channels)
        # One convolution at the image grid: local edge features are what the image-level SAM correlates, and a
        # second 3x3x3 layer there would cost more than the whole pyramid.
        self.image = _conv(in_channels, channels[0]) if image_level else None

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C, D, H, W)`` -> ``[f1, f2, f3, f4]`` (``[f0, f1, f2, f3, f4]`` with the image level)."""
        features, x = [], image
        for down, refine in zip(self.down, self.refine, strict=True):
            stride = _stage_stride(x.shape[2], down.kernel_size[0])
            x = refine(F.leaky_relu(F.conv3d(x, down.weight, down.bias, stride=stride, padding=1), 0.2))
            features.append(x)
        return features if self.image is None else [self.image(image), *features]


class RegistrationNet(nn.Module):
    """Registration-only FPRAN (the "Register CT to MRI" action): two light encoders (weights not shared) + FPRAN.

    Args:
        channels: encoder channels of f1..f4 (both branches).
        hidden, radius, affine_bound, paired_affine: see :class:`FPRAN`.
        image_level: a fifth SAM at the working image grid refines ψ1 (upsampled from half resolution) into ψ0. Its
            head starts at zero, so a four-level model fine-tuned with it starts from that model's exact output.
    """

    #: Modules :func:`cspineai.training.init_from.fitting_weights` may start fresh when fine-tuning a four-level model.
    fresh_start_prefixes = ("ct_encoder.image.", "mri_encoder.image.", "fpran.fine.3.")

    def __init__(self, channels: Sequence[int] = (8, 16, 16, 32), hidden: int = 32, radius: Sequence[int] = (1, 2, 2),
                 affine_bound: float = 0.25, paired_affine: bool = True, image_level: bool = False):
        super().__init__()
        self.config = {"channels": list(channels), "hidden": hidden, "radius": list(radius),
                       "affine_bound": affine_bound, "paired_affine": paired_affine, "image_level": image_level}
        self.ct_encoder = LightPyramidEncoder(1, channels, image_level)
        self.mri_encoder = LightPyramidEncoder(1, channels, image_level)
        levels = [channels[0], *channels] if image_level else list(channels)
        self.fpran = FPRAN(levels, levels, hidden, radius, affine_bound, paired_affine)

    def forward(self, ct: torch.Tensor, mri: torch.Tensor, base: torch.Tensor) -> FPRANOutput:
        """``ct`` (B, 1, Dc, Hc, Wc) and ``mri`` (B, 1, D, H, W) intensity-normalised working images; ``base`` R."""
        return self.fpran(self.ct_encoder(ct), self.mri_encoder(mri), base, ct_image=ct, mri_size=mri.shape[2:])
