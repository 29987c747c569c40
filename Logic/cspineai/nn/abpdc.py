"""Difference convolutions for thick-slice volumes: plain, CDC, PDC, ACDC and ABPDC in one module.

Paper 000, section 2.2, as methods.md section 1 reads it. For an odd kernel size K with r = K // 2 and offsets
(dz, dy, dx), dz along the slice axis (the first spatial axis of a ``(B, C, D, H, W)`` tensor):

- full support C: every offset with |d| <= r;
- pyramid support S: |dz| <= r and |dy|, |dx| <= r - |dz| (K = 3: the 3x3 centre plane plus the voxel above and below;
  the pyramid shrinks towards both neighbouring slices, hence "bidirectional").

With one weight w of shape (out, in / groups, K, K, K), input T and the patch centre T_c::

    y = (1 - θ) · Σ_C w·T + θ · Σ_S w·(T - T_c)
      = (1 - θ) · conv(T, w) + θ · [conv(T, w ⊙ M_S) - T_c · Σ_S w]

``T_c · Σ_S w`` is a 1x1x1 convolution whose weight is the masked kernel summed over its taps. θ is either a fixed
number (``cdc``, ``pdc``; the formula is then one kernel, :meth:`DifferenceConv.folded_weight`) or per voxel (``acdc``,
``abpdc``)::

    θ = 1 - sigmoid(conv1x1(avgpool3(mean_c |Sobel(T)|)))

sampled at the centre of each output voxel's patch (the 3x3x3 pool around that centre: with a stride, θ is pooled
onto the output grid). Sharp texture (large gradient) pushes θ towards 0, plain convolution; the 1x1x1 weight starts
small and positive, its bias at logit(0.3), so that θ starts near 0.7 and keeps the intended sign. The texture measure
G is computed without gradient (a stop-gradient): the 1x1x1 weight and bias learn exactly, but no gradient flows from
θ back into the previous layer through the Sobel magnitude. This spares the head a backward pass and avoids the
unbounded derivative of the magnitude at zero; the forward value is the formula's.

Cost. Fixed θ: one convolution with the folded kernel. Adaptive θ, full support (``acdc``): Σ_C w·(T - T_c) is
conv(T, w) - T_c·Σw, so y = conv(T, w) - θ·T_c·Σw: one convolution and one 1x1x1 pass. Adaptive θ, pyramid support
(``abpdc``): θ weights the taps outside S per output voxel, so the kernel cannot be folded. With
Q = w ⊙ (1 - M_S) + δ_centre · Σ_S w (the taps outside the pyramid plus the centre term)::

    y = conv(T, w) - θ · conv(T, Q)

and both convolutions run as one call with 2·out channels. A split by slice planes (9 + 18 + 3 taps instead of 54) was
measured slower on CPU (PyTorch's backward of small and stacked kernels), so the single wide call was kept;
``benchmarks/bench_abpdc.py`` prints the ratio to a plain convolution. That call is the floor of this design: at
(4, 16, 8, 64, 64) a plain convolution's forward+backward took 35 ms, the wide call with the combination alone 70 ms,
θ's head 10 ms more (/tmp measurement, two threads). Issue 5's 1.3x needs a kernel that runs the taps outside the
pyramid once, weighted per voxel, which PyTorch does not offer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

#: Variant name -> (support, adaptive θ).
VARIANTS = {
    "conv": ("full", False),
    "cdc": ("full", False),
    "pdc": ("pyramid", False),
    "acdc": ("full", True),
    "abpdc": ("pyramid", True),
}
DEFAULT_THETA = 0.7  # CDC paper's value (Yu et al. 2020), also the starting point of the adaptive θ


def _tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n:
        raise ValueError(f"{name} needs {n} values, got {value!r}")
    return out


def pyramid_mask(kernel_size: int, spatial_dims: int = 3, support: str = "pyramid") -> torch.Tensor:
    """0/1 mask of the support, shape ``(K,) * spatial_dims``; axis 0 is the slice axis.

    ``support="pyramid"``: |d0| <= r and every in-plane |d| <= r - |d0|; ``"full"``: all ones.
    """
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    r = kernel_size // 2
    offsets = torch.arange(kernel_size) - r
    grids = torch.meshgrid(*([offsets] * spatial_dims), indexing="ij")
    if support == "full":
        return torch.ones((kernel_size,) * spatial_dims)
    if support != "pyramid":
        raise ValueError(f"support must be 'full' or 'pyramid', not {support!r}")
    inside = torch.ones_like(grids[0], dtype=torch.bool)
    for g in grids[1:]:
        inside &= g.abs() <= r - grids[0].abs()
    return inside.float()


def _smooth_valid(x: torch.Tensor, axis: int) -> torch.Tensor:
    """[1, 2, 1] along ``axis`` without padding (the axis shrinks by 2)."""
    n = x.shape[axis] - 2
    out = x.narrow(axis, 1, n) * 2.0
    return out.add_(x.narrow(axis, 0, n)).add_(x.narrow(axis, 2, n))


def _derive_valid(x: torch.Tensor, axis: int) -> torch.Tensor:
    """[-1, 0, 1] along ``axis`` without padding (the axis shrinks by 2)."""
    n = x.shape[axis] - 2
    return x.narrow(axis, 2, n) - x.narrow(axis, 0, n)


def sobel_gradients(x: torch.Tensor) -> list[torch.Tensor]:
    """Per-channel Sobel derivatives of ``(B, C, *spatial)`` with zero outside the image, one ``(B, C, *spatial)``
    tensor per spatial axis, normalised so that a unit ramp along an axis has derivative 1 along it.

    Separable valid passes on an input zero-padded once (the padding stays zero through the passes along other axes,
    so this equals zero padding before every pass), sharing the smoothing passes between the derivatives: a depthwise
    3x3x3 convolution runs several times slower on PyTorch's CPU backend than the whole layer's convolution.
    """
    n = x.ndim - 2
    xp = F.pad(x, [1] * (2 * n))
    axes = list(range(2, x.ndim))
    scale = 1.0 / (2.0 * 4.0 ** (n - 1))
    grads = []
    for axis in axes:
        g = _derive_valid(xp, axis)
        for other in axes:
            if other != axis:
                g = _smooth_valid(g, other)
        grads.append(g.mul_(scale))
    return grads


def box_mean(x: torch.Tensor) -> torch.Tensor:
    """3x3x3 mean of ``(B, C, *spatial)`` over the voxels inside the image (the border is not read as smooth texture).

    Separable sums, because ``avg_pool3d`` refuses axes shorter than its kernel (two-slice inputs occur at level 4).
    """
    n = x.ndim - 2
    total = F.pad(x, [1] * (2 * n))
    count = F.pad(torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device), [1] * (2 * n))
    for axis in range(2, x.ndim):
        m = total.shape[axis] - 2
        total = total.narrow(axis, 0, m) + total.narrow(axis, 1, m) + total.narrow(axis, 2, m)
        count = count.narrow(axis, 0, m) + count.narrow(axis, 1, m) + count.narrow(axis, 2, m)
    return total / count


class AdaptiveTheta(nn.Module):
    """The θ head of ABPDC: θ = 1 - sigmoid(conv1x1(avgpool3(mean over channels of |Sobel(T)|))), one θ per voxel.

    Args:
        spatial_dims: 2 or 3.
        init_theta: θ where the gradient is zero at initialisation.
        init_weight: starting 1x1x1 weight (positive: sharper texture, smaller θ).
        eps: added under the square root of the gradient magnitude (its derivative is unbounded at 0).
    """

    def __init__(self, spatial_dims: int = 3, init_theta: float = DEFAULT_THETA, init_weight: float = 0.1,
                 eps: float = 1e-6):
        super().__init__()
        if not 0.0 < init_theta < 1.0:
            raise ValueError(f"init_theta must lie in (0, 1), got {init_theta}")
        self.spatial_dims = spatial_dims
        self.eps = eps
        self.proj = (nn.Conv3d if spatial_dims == 3 else nn.Conv2d)(1, 1, kernel_size=1, bias=True)
        with torch.no_grad():
            self.proj.weight.fill_(init_weight)
            self.proj.bias.fill_(math.log((1.0 - init_theta) / init_theta))  # sigmoid(b) = 1 - init_theta

    def texture(self, x: torch.Tensor) -> torch.Tensor:
        """Local texture strength G averaged over channels and pooled 3x3x3: ``(B, 1, *spatial)`` on the input grid.

        Computed without gradient (see the module docstring).
        """
        with torch.no_grad():
            # the magnitude is taken per channel before the channel mean (methods.md: Pool_c of G)
            squared = None
            for g in sobel_gradients(x.detach()):
                squared = g.square_() if squared is None else squared.addcmul_(g, g)
            magnitude = squared.add_(self.eps).sqrt_()
            return box_mean(magnitude.mean(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor, centres: tuple[slice, ...] | None = None,
                pad: Sequence[int] = ()) -> torch.Tensor:
        """θ in (0, 1), ``(B, 1, *spatial)``.

        ``centres`` (one slice per spatial axis, on the grid zero-padded by ``pad`` per axis) picks the patch centres
        of a strided or differently padded convolution, so that θ lands on its output grid.
        """
        g = self.texture(x)
        if any(pad):
            g = F.pad(g, [p for p in reversed(tuple(pad)) for _ in range(2)])
        if centres is not None:
            g = g[(slice(None), slice(None), *centres)]
        # The 1x1x1 convolution of one channel is a scalar affine map. As a convolution its forward and backward took
        # 13 ms at (4, 1, 8, 64, 64) on PyTorch's CPU backend, as addcmul 0.3 ms (/tmp measurement, two threads).
        return 1.0 - torch.sigmoid(torch.addcmul(self.proj.bias.view(()), g, self.proj.weight.view(())))


class DifferenceConv(nn.Module):
    """One convolution layer covering ``conv``, ``cdc``, ``pdc``, ``acdc`` and ``abpdc`` (methods.md section 1).

    Input ``(B, in_channels, D, H, W)`` (``spatial_dims=2``: ``(B, in_channels, H, W)``) with D the slice axis, output
    ``(B, out_channels, D', H', W')`` with the sizes of ``torch.nn.Conv3d`` for the same kernel, stride and padding.

    Args:
        spatial_dims: 3 (2 allowed; the first spatial axis then plays the slice axis).
        in_channels, out_channels: channel counts.
        kernel_size: odd K (cubic kernel).
        stride: int or one value per spatial axis (thick-slice volumes are often downsampled in-plane only).
        padding: zero padding per axis; default K // 2 ("same" for stride 1).
        groups: as in ``torch.nn.Conv3d``.
        bias: add a learnable bias after the combination (off by default: a normalisation usually follows).
        variant: ``"conv"`` (θ = 0), ``"cdc"`` (full support, fixed θ), ``"pdc"`` (pyramid, fixed θ), ``"acdc"`` (full,
            adaptive θ), ``"abpdc"`` (pyramid, adaptive θ: the paper's module).
        theta: the fixed θ of ``cdc``/``pdc``, and the starting θ of the adaptive variants.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        groups: int = 1,
        bias: bool = False,
        variant: str = "abpdc",
        theta: float = DEFAULT_THETA,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, not {variant!r}")
        if kernel_size % 2 != 1 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must divide by groups")
        self.spatial_dims, self.variant = spatial_dims, variant
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = kernel_size
        self.stride = _tuple(stride, spatial_dims, "stride")
        self.padding = _tuple(kernel_size // 2 if padding is None else padding, spatial_dims, "padding")
        self.support, self.adaptive = VARIANTS[variant]
        conv_cls = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        # The plain layer owns w (and its default initialisation); its own forward is used only for variant "conv".
        self.conv = conv_cls(
            in_channels, out_channels, kernel_size, self.stride, self.padding, groups=groups, bias=bias
        )
        self.register_buffer("mask", pyramid_mask(kernel_size, spatial_dims, self.support), persistent=False)
        self.theta_head = AdaptiveTheta(spatial_dims, init_theta=theta) if self.adaptive else None
        self.theta = 0.0 if variant == "conv" else float(theta)

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def extra_repr(self) -> str:
        theta = "adaptive" if self.adaptive else f"{self.theta:g}"
        return f"variant={self.variant}, support={self.support}, theta={theta}"

    # --- building blocks ----------------------------------------------------------------------------------------------
    def _ops(self):
        if self.spatial_dims == 3:
            return F.conv3d
        return F.conv2d

    def _centre_sum(self, weight: torch.Tensor) -> torch.Tensor:
        """Σ_S w as a 1x1x1 kernel ``(out, in / groups, 1, 1, 1)``."""
        return (weight * self.mask).sum(dim=tuple(range(2, weight.ndim)), keepdim=True)

    def folded_weight(self, theta: float | None = None) -> torch.Tensor:
        """The single kernel equal to the layer for a fixed θ: (1 - θ)·w + θ·w⊙M_S, minus θ·Σ_S w at the centre tap."""
        theta = self.theta if theta is None else theta
        w = self.conv.weight
        kernel = (1.0 - theta) * w + theta * (w * self.mask)
        r = self.kernel_size // 2
        centre = (slice(None), slice(None)) + (r,) * self.spatial_dims
        centre_delta = torch.zeros_like(w)
        centre_delta[centre] = self._centre_sum(w)[(slice(None), slice(None)) + (0,) * self.spatial_dims]
        return kernel - theta * centre_delta

    def _centres(self, x: torch.Tensor, out_shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[int, ...]]:
        """Index slices of the patch centres on the (padded) input grid, and the extra padding they need."""
        r = self.kernel_size // 2
        pad_extra = tuple(max(0, p - r) for p in self.padding)
        slices = tuple(
            slice(r - p + e, r - p + e + (n - 1) * s + 1, s)
            for p, e, s, n in zip(self.padding, pad_extra, self.stride, out_shape, strict=True)
        )
        return slices, pad_extra

    def centre_values(self, x: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
        """T_c for every output voxel: ``(B, in_channels, *out_shape)``."""
        slices, pad_extra = self._centres(x, out_shape)
        if any(pad_extra):
            x = F.pad(x, [e for e in reversed(pad_extra) for _ in range(2)])
        return x[(slice(None), slice(None), *slices)]

    def theta_map(self, x: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
        """Adaptive θ on the output grid, ``(B, 1, *out_shape)`` (adaptive variants only)."""
        slices, pad_extra = self._centres(x, out_shape)
        return self.theta_head(x, slices, pad_extra)

    def difference_kernel(self) -> torch.Tensor:
        """Q = w ⊙ (1 - M_S) with Σ_S w added at the centre tap: y = conv(T, w) - θ · conv(T, Q)."""
        w = self.conv.weight
        r = self.kernel_size // 2
        q = w * (1.0 - self.mask)
        centre = (slice(None), slice(None)) + (r,) * self.spatial_dims
        q[centre] = q[centre] + self._centre_sum(w).flatten(2)[..., 0]
        return q

    # --- forward ------------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self._ops()
        if not self.adaptive:
            if self.variant == "conv" or self.theta == 0.0:
                return self.conv(x)
            return conv(x, self.folded_weight(), self.conv.bias, self.stride, self.padding, groups=self.groups)

        w = self.conv.weight
        if self.support == "full" or self.kernel_size == 1:
            y = conv(x, w, None, self.stride, self.padding, groups=self.groups)
            theta = self.theta_map(x, y.shape[2:])
            centre = conv(self.centre_values(x, y.shape[2:]), self._centre_sum(w), groups=self.groups)
            y = y - theta * centre
        else:
            g = self.groups
            # one call for conv(T, w) and conv(T, Q): output channels interleaved group by group, (g, 2, out / g)
            both = torch.stack([w.unflatten(0, (g, -1)), self.difference_kernel().unflatten(0, (g, -1))], dim=1)
            out = conv(x, both.flatten(0, 2), None, self.stride, self.padding, groups=g)
            # unbind (backward: one stack) rather than indexing (backward: a zero-filled copy per index)
            plain, difference = (part.flatten(1, 2) for part in out.unflatten(1, (g, 2, -1)).unbind(2))
            y = torch.addcmul(plain, self.theta_map(x, plain.shape[2:]), difference, value=-1.0)
        if self.conv.bias is not None:
            y = y + self.conv.bias.view(1, -1, *([1] * self.spatial_dims))
        return y


__all__ = ["VARIANTS", "AdaptiveTheta", "DifferenceConv", "pyramid_mask", "sobel_gradients"]
