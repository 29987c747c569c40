"""ABPDC and its variants against a naive reference written from the paper's formula (explicit sums over offsets)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from cspineai.nn.abpdc import VARIANTS, DifferenceConv, pyramid_mask


# --- the naive reference --------------------------------------------------------------------------------------------
def reference_support(kernel_size: int, spatial_dims: int, support: str) -> list[tuple[int, ...]]:
    """Offsets of C or S written from the paper's set definition, independently of :func:`pyramid_mask`."""
    r = kernel_size // 2
    offsets = []
    for d in itertools.product(range(-r, r + 1), repeat=spatial_dims):
        if support == "full" or all(abs(a) <= r - abs(d[0]) for a in d[1:]):
            offsets.append(d)
    return offsets


def reference_theta(layer: DifferenceConv, x: np.ndarray) -> np.ndarray:
    """θ per input voxel, ``(B, *spatial)``, with scipy's Sobel (zero outside the image) and a pool that ignores the
    outside, then the layer's learnt 1x1x1 weight and bias."""
    n = x.ndim - 2
    scale = 2.0 * 4.0 ** (n - 1)  # scipy's Sobel is unnormalised: [-1, 0, 1] x [1, 2, 1]^(n-1)
    b, c = x.shape[:2]
    g = np.zeros((b, *x.shape[2:]))
    for bi, ci in itertools.product(range(b), range(c)):
        grads = [ndimage.sobel(x[bi, ci], axis=a, mode="constant", cval=0.0) / scale for a in range(n)]
        g[bi] += np.sqrt(sum(d**2 for d in grads) + layer.theta_head.eps)
    g /= c
    ones = np.ones(x.shape[2:])
    count = ndimage.uniform_filter(ones, size=3, mode="constant")
    pooled = np.stack([ndimage.uniform_filter(gi, size=3, mode="constant") / count for gi in g])
    a = float(layer.theta_head.proj.weight.detach().reshape(()))
    bias = float(layer.theta_head.proj.bias.detach().reshape(()))
    return 1.0 - 1.0 / (1.0 + np.exp(-(a * pooled + bias)))


def reference_forward(layer: DifferenceConv, x: torch.Tensor) -> np.ndarray:
    """y = (1 - θ) Σ_C w T + θ Σ_S w (T - T_c), summed offset by offset (float64 numpy)."""
    x = x.detach().double().numpy()
    w = layer.conv.weight.detach().double().numpy()
    n, k = x.ndim - 2, layer.kernel_size
    r = k // 2
    pad, stride, groups = layer.padding, layer.stride, layer.groups
    xp = np.pad(x, [(0, 0), (0, 0), *[(p, p) for p in pad]])
    out_shape = [(xp.shape[2 + a] - k) // stride[a] + 1 for a in range(n)]
    support = "full" if layer.variant == "conv" else layer.support
    if layer.adaptive:
        theta_in = reference_theta(layer, x)
        extra = [max(0, p - r) for p in pad]
        # a patch centred in the zero padding has no texture: θ = 1 - sigmoid(bias) there
        outside_theta = 1.0 - 1.0 / (1.0 + np.exp(-float(layer.theta_head.proj.bias.detach().reshape(()))))
        theta_in = np.pad(theta_in, [(0, 0), *[(e, e) for e in extra]], constant_values=outside_theta)
        sel = tuple(
            slice(r - p + e, r - p + e + (m - 1) * s + 1, s)
            for p, e, s, m in zip(pad, extra, stride, out_shape, strict=True)
        )
        theta = theta_in[(slice(None), *sel)][:, None]
    else:
        theta = 0.0 if layer.variant == "conv" else layer.theta

    def window(offset):  # input values at (output position * stride + r + offset) on the padded grid
        sel = tuple(slice(r + d, r + d + (m - 1) * s + 1, s) for d, s, m in zip(offset, stride, out_shape, strict=True))
        return xp[(slice(None), slice(None), *sel)]

    cin_g, cout_g = x.shape[1] // groups, w.shape[0] // groups
    centre = window((0,) * n)
    full = np.zeros((x.shape[0], w.shape[0], *out_shape))
    diff = np.zeros_like(full)
    for offset in reference_support(k, n, "full"):
        tap = tuple(r + d for d in offset)
        in_s = offset in reference_support(k, n, support)
        t = window(offset)
        for g in range(groups):
            wi = w[g * cout_g : (g + 1) * cout_g, :, *tap]  # (out_g, in_g)
            ti = t[:, g * cin_g : (g + 1) * cin_g]
            full[:, g * cout_g : (g + 1) * cout_g] += np.einsum("oi,bi...->bo...", wi, ti)
            if in_s:
                ci = centre[:, g * cin_g : (g + 1) * cin_g]
                diff[:, g * cout_g : (g + 1) * cout_g] += np.einsum("oi,bi...->bo...", wi, ti - ci)
    y = (1.0 - theta) * full + theta * diff
    if layer.conv.bias is not None:
        y += layer.conv.bias.detach().double().numpy().reshape(1, -1, *([1] * n))
    return y


def make_layer(variant, kernel_size=3, stride=1, spatial_dims=3, **kw) -> DifferenceConv:
    torch.manual_seed(0)
    layer = DifferenceConv(spatial_dims, 4, 6, kernel_size, stride=stride, variant=variant, **kw).double()
    if layer.theta_head is not None:  # a steeper θ head than at initialisation, so that θ really varies per voxel
        with torch.no_grad():
            layer.theta_head.proj.weight.fill_(2.5)
    return layer


def textured_input(spatial=(7, 9, 8), channels=4, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, *spatial, generator=g, dtype=torch.float64)
    x[:, :, : spatial[0] // 2] *= 0.1  # a smooth half and a rough half give a spread of θ
    return x


# --- equivalence ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_every_variant_matches_the_naive_sum_over_offsets(variant, kernel_size, stride):
    layer = make_layer(variant, kernel_size, stride)
    x = textured_input()
    y = layer(x)
    expected = reference_forward(layer, x)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.detach().numpy(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["pdc", "abpdc", "acdc"])
def test_matches_reference_with_groups_bias_anisotropic_stride_and_no_padding(variant):
    torch.manual_seed(1)
    layer = DifferenceConv(3, 4, 6, 3, stride=(1, 2, 2), padding=(0, 1, 2), groups=2, bias=True, variant=variant)
    layer = layer.double()
    x = textured_input((5, 9, 10))
    np.testing.assert_allclose(layer(x).detach().numpy(), reference_forward(layer, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_two_dimensional_layer_matches_reference(variant):
    layer = make_layer(variant, 3, 2, spatial_dims=2)
    x = textured_input((9, 8))
    np.testing.assert_allclose(layer(x).detach().numpy(), reference_forward(layer, x), atol=1e-5, rtol=0)


def test_output_shape_equals_plain_convolution_for_every_variant():
    x = torch.randn(1, 4, 6, 11, 10)
    for variant in VARIANTS:
        layer = DifferenceConv(3, 4, 8, 3, stride=(1, 2, 2), variant=variant)
        assert layer(x).shape == layer.conv(x).shape == (1, 8, 6, 6, 5)


def test_pyramid_of_kernel_three_is_the_centre_plane_and_the_voxels_above_and_below():
    mask = pyramid_mask(3)
    assert mask.sum() == 11
    assert mask[1].sum() == 9 and mask[0].sum() == mask[2].sum() == 1
    assert mask[0, 1, 1] == mask[2, 1, 1] == 1
    assert pyramid_mask(5).sum() == 25 + 2 * 9 + 2 * 1


def test_fixed_theta_layers_are_a_single_convolution_with_the_folded_kernel():
    layer = make_layer("pdc")
    x = textured_input()
    folded = torch.nn.functional.conv3d(x, layer.folded_weight(), padding=1)
    torch.testing.assert_close(layer(x), folded)


def test_adaptive_theta_starts_near_point_seven_and_falls_with_sharper_texture():
    layer = DifferenceConv(3, 2, 2, variant="abpdc")
    smooth, rough = torch.zeros(1, 2, 6, 8, 8), torch.randn(1, 2, 6, 8, 8) * 5
    theta_smooth = layer.theta_map(smooth, (6, 8, 8))
    theta_rough = layer.theta_map(rough, (6, 8, 8))
    assert theta_smooth.shape == (1, 1, 6, 8, 8)
    assert theta_smooth.mean().item() == pytest.approx(0.7, abs=0.01)
    assert theta_rough.mean() < theta_smooth.mean() - 0.02


def test_strided_theta_is_sampled_at_the_patch_centres_of_the_output_grid():
    layer = make_layer("abpdc", 3, stride=(2, 2, 2))
    x = textured_input((8, 8, 8))
    full = layer.theta_head(x)
    strided = layer.theta_map(x, layer(x).shape[2:])
    torch.testing.assert_close(strided, full[:, :, ::2, ::2, ::2])


# --- gradients ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["acdc", "abpdc"])
def test_gradients_reach_the_weight_and_the_theta_head(variant):
    layer = DifferenceConv(3, 3, 4, variant=variant)
    x = torch.randn(2, 3, 5, 8, 8, requires_grad=True)
    layer(x).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert layer.theta_head.proj.weight.grad.abs().item() > 0 and layer.theta_head.proj.bias.grad.abs().item() > 0
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_taps_outside_the_pyramid_get_no_gradient_from_the_difference_term(kernel_size):
    x = textured_input((6, 7, 7))
    outside = pyramid_mask(kernel_size) == 0
    # θ = 1 leaves only the difference term: the taps outside S must get exactly nothing ...
    pdc = DifferenceConv(3, 4, 6, kernel_size, variant="pdc", theta=1.0).double()
    pdc(x).square().sum().backward()
    assert pdc.weight.grad[..., outside].abs().max() == 0
    assert pdc.weight.grad[..., ~outside].abs().max() > 0
    # ... while with the full support (CDC) the same taps do get a gradient: the check above can fail.
    cdc = DifferenceConv(3, 4, 6, kernel_size, variant="cdc", theta=1.0).double()
    cdc(x).square().sum().backward()
    assert cdc.weight.grad[..., outside].abs().min() > 0


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_with_adaptive_theta_taps_outside_the_pyramid_see_only_the_plain_convolution(kernel_size):
    layer = make_layer("abpdc", kernel_size)
    x = textured_input((6, 7, 7))
    upstream = torch.randn(layer(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (layer(x) * upstream).sum().backward()
    grad = layer.weight.grad.clone()
    # the same upstream gradient through (1 - θ)·conv(T, w) alone, θ held fixed
    layer.weight.grad = None
    theta = layer.theta_map(x, x.shape[2:]).detach()
    plain = torch.nn.functional.conv3d(x, layer.weight, padding=kernel_size // 2)
    ((1 - theta) * plain * upstream).sum().backward()
    outside = pyramid_mask(kernel_size) == 0
    torch.testing.assert_close(grad[..., outside], layer.weight.grad[..., outside], atol=1e-10, rtol=1e-8)
    assert not torch.allclose(grad[..., ~outside], layer.weight.grad[..., ~outside])


# --- argument checks ------------------------------------------------------------------------------------------------
def test_rejects_even_kernels_and_unknown_variants():
    with pytest.raises(ValueError, match="odd"):
        DifferenceConv(3, 2, 2, kernel_size=4)
    with pytest.raises(ValueError, match="variant"):
        DifferenceConv(3, 2, 2, variant="lbp")
