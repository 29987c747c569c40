"""SAttisUNet and its parts: shapes in 2-D and 3-D, XCA's channel attention, gradients, learning a toy problem."""

from __future__ import annotations

import pytest
import torch

from cspineai.nn.sattisunet import (
    AttentiveSkip,
    CrossCovarianceAttention,
    PatchExpand,
    SAttisUNet,
    build_segmentation_network,
    init_output_prior,
)

SMALL = {"embed_dim": 8, "depths": (1, 1, 1), "num_heads": (1, 2, 4), "window_size": 4, "skip_width": 16, "skip_heads":
2}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(
    ("spatial_dims", "shape"), [(2, (2, 1, 37, 50)), (2, (1, 1, 16, 16)), (3, (1, 1, 9, 20, 14))]
)
def test_logits_come_back_on_the_input_grid_for_any_size(spatial_dims, shape):
    net = SAttisUNet(1, 5, spatial_dims, **SMALL)
    assert net(torch.randn(shape)).shape == (shape[0], 5, *shape[2:])


def test_network_refuses_an_input_with_the_wrong_number_of_axes():
    with pytest.raises(ValueError, match="spatial axes"):
        SAttisUNet(1, 3, 2, **SMALL)(torch.randn(1, 1, 8, 8, 8))


def test_xca_attention_is_d_by_d_whatever_the_number_of_tokens():
    xca = CrossCovarianceAttention(dim=32, num_heads=4)
    small, large = xca.attention_map(torch.randn(1, 10, 32)), xca.attention_map(torch.randn(1, 5000, 32))
    assert small.shape == large.shape == (1, 4, 8, 8)
    assert torch.allclose(large.sum(-1), torch.ones(1, 4, 8))  # rows are softmax distributions


def test_xca_memory_grows_linearly_with_tokens():
    # Peak autograd-saved memory of one forward: a token-token attention would grow 100x for 10x tokens.
    xca = CrossCovarianceAttention(dim=16, num_heads=2)

    def saved_bytes(n):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            xca(torch.randn(1, n, 16, requires_grad=True))
        return total

    ratio = saved_bytes(20000) / saved_bytes(2000)
    assert 8 < ratio < 12


def test_xca_output_follows_a_permutation_of_the_tokens():
    xca = CrossCovarianceAttention(dim=16, num_heads=2).eval()
    x = torch.randn(2, 50, 16)
    perm = torch.randperm(50)
    assert torch.allclose(xca(x)[:, perm], xca(x[:, perm]), atol=1e-5)


def test_xca_mixes_channels_across_all_tokens():
    # Changing one far-away token changes every token's output (global attention), unlike a windowed block.
    xca = CrossCovarianceAttention(dim=16, num_heads=2).eval()
    x = torch.randn(1, 40, 16)
    y = x.clone()
    y[0, -1] += 5.0
    changed = (xca(x) - xca(y)).abs().sum(-1)[0, :-1]
    assert bool((changed > 1e-6).all())


def test_attentive_skip_returns_every_scale_in_its_shape_and_couples_the_scales():
    torch.manual_seed(0)
    skip = AttentiveSkip((8, 16, 32), width=16, num_heads=2).eval()
    maps = [torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]
    out = skip(maps)
    assert [o.shape for o in out] == [m.shape for m in maps]
    # The coarse scale's output depends on the fine scale's input: the scales were merged before attention. The
    # perturbation varies across channels: a constant added to every channel vanishes in the tokens' LayerNorm.
    perturbed = [maps[0] + torch.randn_like(maps[0]), maps[1], maps[2]]
    assert (skip(perturbed)[2] - out[2]).abs().max() > 1e-3


def test_patch_expand_doubles_the_grid_and_sets_the_width():
    assert PatchExpand(2, 16, 8)(torch.randn(2, 16, 5, 7)).shape == (2, 8, 10, 14)
    assert PatchExpand(3, 16, 8, scale=2)(torch.randn(1, 16, 3, 4, 5)).shape == (1, 8, 6, 8, 10)


def test_gradients_reach_every_parameter():
    net = SAttisUNet(1, 3, 2, **SMALL)
    net(torch.randn(2, 1, 32, 32)).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert net.attentive_skip.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_plain_skip_ablation_has_no_attention_module():
    assert SAttisUNet(1, 3, 2, attentive_skip=False, **SMALL).attentive_skip is None


def test_a_few_steps_on_a_toy_segmentation_problem_reduce_the_loss():
    from monai.losses import DiceCELoss

    # Bright discs on noise: the label is the disc.
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.tensor([[10.0, 12.0], [20.0, 18.0], [16.0, 9.0], [12.0, 22.0]])
    labels = torch.stack([((yy - cy) ** 2 + (xx - cx) ** 2 < 30).float() for cy, cx in centres])[:, None]
    images = labels + 0.3 * torch.randn_like(labels)
    net = SAttisUNet(1, 2, 2, **SMALL)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        optimiser.zero_grad()
        loss = loss_fn(net(images), labels)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]


@pytest.mark.parametrize("name", ["sattisunet", "unet", "swinunetr"])
def test_every_network_of_the_factory_takes_the_same_tiles(name):
    if name == "swinunetr":
        pytest.importorskip("einops", reason="MONAI's SwinUNETR needs einops")
    options = SMALL if name == "sattisunet" else {}
    net = build_segmentation_network(name, in_channels=1, out_channels=4, spatial_dims=2, **options)
    assert net(torch.randn(1, 1, 40, 36)).shape == (1, 4, 40, 36)


@pytest.mark.parametrize("name", ["sattisunet", "unet", "swinunetr"])
def test_prior_initialisation_starts_every_network_near_the_class_frequencies(name):
    if name == "swinunetr":
        pytest.importorskip("einops", reason="MONAI's SwinUNETR needs einops")
    options = SMALL if name == "sattisunet" else {}
    net = build_segmentation_network(name, in_channels=1, out_channels=3, spatial_dims=2, **options).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        uniform = net(x).softmax(1).mean((0, 2, 3))
        init_output_prior(net, [0.9, 0.06, 0.04])
        prior = net(x).softmax(1).mean((0, 2, 3))
    assert uniform[0] < 0.6  # a default start spreads the classes ...
    assert prior[0] > 0.8 and prior[1] < 0.1 and prior[2] < 0.1  # ... the prior start predicts mostly background


def test_prior_initialisation_refuses_a_prior_that_does_not_fit_the_output():
    net = build_segmentation_network("unet", in_channels=1, out_channels=3, spatial_dims=2)
    with pytest.raises(ValueError, match="no biased output convolution with 4 channels"):
        init_output_prior(net, [0.7, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="positive frequencies"):
        init_output_prior(net, [1.0, 0.0, 0.0])


def test_factory_names_the_choices_for_an_unknown_network():
    with pytest.raises(ValueError, match="sattisunet"):
        build_segmentation_network("segformer")
