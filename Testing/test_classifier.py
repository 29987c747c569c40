"""The pyramid backbone, the two-branch classifier and its MONAI baselines."""

from __future__ import annotations

import pytest
import torch

from cspineai.errors import CSpineInputError
from cspineai.nn.abpdc import VARIANTS
from cspineai.nn.backbone import PyramidBackbone, pyramid_strides
from cspineai.nn.classifier import BASELINES, PAPER_PAIRS, ClassifierOutput, build_classifier, order_pair
from cspineai.preprocess import WORKING_GRIDS

TINY = {"widths": [4, 8, 8, 8]}


def inputs_for(model, sizes=None, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = sizes or model.config["input_sizes"]
    return {s: torch.rand(batch, 1, *sizes[s], generator=g) for s in model.series}


# --- backbone -------------------------------------------------------------------------------------------------------
def test_slice_axis_is_halved_only_while_longer_than_the_kernel():
    assert pyramid_strides((16, 128, 128)) == [(2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)]
    assert pyramid_strides((32, 96, 96)) == [(2, 2, 2)] * 4
    assert pyramid_strides((3, 64, 64)) == [(1, 2, 2)] * 4


def test_backbone_returns_four_levels_with_documented_shapes():
    backbone = PyramidBackbone((6, 32, 24), widths=(4, 8, 12, 16), variant="abpdc")
    features = backbone(torch.rand(2, 1, 6, 32, 24))
    assert [tuple(f.shape[1:]) for f in features] == backbone.pyramid_shapes()
    assert backbone.pyramid_shapes() == [(4, 3, 16, 12), (8, 3, 8, 6), (12, 3, 4, 3), (16, 3, 2, 2)]
    assert backbone.cumulative_strides() == [(2, 2, 2), (2, 4, 4), (2, 8, 8), (2, 16, 16)]
    assert backbone.target_layer is backbone.stages[-1]


def test_two_dimensional_backbone_treats_the_first_axis_as_the_slice_axis():
    backbone = PyramidBackbone((3, 32), widths=(4, 8, 8, 8), spatial_dims=2)
    features = backbone(torch.rand(2, 1, 3, 32))
    assert [tuple(f.shape[1:]) for f in features] == [(4, 3, 16), (8, 3, 8), (8, 3, 4), (8, 3, 2)]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_on_the_anisotropic_working_sizes(variant):
    model = build_classifier({**TINY, "variant": variant, "series": ["T1_sag", "CT_bone"]})
    out = model(inputs_for(model, batch=1), return_features=True)
    out.logits.sum().backward()
    for name in model.series:
        assert [tuple(f.shape[2:]) for f in out.pyramids[name]] == [
            s[1:] for s in model.branches[name].pyramid_shapes()
        ]
        assert out.pyramids[name][0].shape[2:] == tuple(-(-n // 2) for n in WORKING_GRIDS[name].size)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# --- classifier -----------------------------------------------------------------------------------------------------
def test_classifier_orders_axial_branch_first_and_concatenates_pooled_level_four():
    model = build_classifier({**TINY, "series": ["T2_sag", "CT_tissue"], "input_sizes": {
        "CT_tissue": [6, 16, 16], "T2_sag": [4, 16, 16]}})
    assert model.series == ("CT_tissue", "T2_sag")
    out = model(inputs_for(model), return_features=True)
    assert isinstance(out, ClassifierOutput) and out.logits.shape == (2, 2)
    expected = torch.cat([out.pyramids[s][-1].mean(dim=(2, 3, 4)) for s in model.series], dim=1)
    torch.testing.assert_close(out.logits, model.head(expected))
    assert set(out.features) == set(model.series) and out.features["CT_tissue"].shape == (2, 8)


def test_grad_cam_target_layers_produce_the_last_pyramid_level():
    model = build_classifier({**TINY, "input_sizes": {"CT_bone": [6, 16, 16], "T1_sag": [4, 16, 16]}})
    captured = {}
    handles = [layer.register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
               for name, layer in model.target_layers().items()]
    out = model(inputs_for(model), return_features=True)
    for h in handles:
        h.remove()
    for name in model.series:
        assert captured[name] is out.pyramids[name][-1]


@pytest.mark.parametrize("backbone", sorted(BASELINES))
def test_every_monai_baseline_runs_forward_and_backward_in_the_two_branch_frame(backbone):
    sizes = {"CT_bone": [16, 16, 16], "T1_sag": [16, 16, 16]}  # DenseNet's five halvings need 16 slices
    model = build_classifier({"backbone": backbone, "input_sizes": sizes})
    captured = {}
    for name, layer in model.target_layers().items():
        layer.register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
    out = model(inputs_for(model), return_features=True)
    out.logits.sum().backward()
    assert out.logits.shape == (2, 2)
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    for name in model.series:
        assert captured[name] is out.pyramids[name][-1]
        first = next(model.branches[name].parameters())
        assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["abpdc", *sorted(BASELINES)])
@pytest.mark.parametrize("pair", [("T1_sag", "T2_tra"), ("T1_sag", "CT_bone")])
def test_every_backbone_runs_on_the_working_sizes_of_the_papers_two_pairs(backbone, pair):
    model = build_classifier({"backbone": backbone, "series": list(pair)}).eval()
    with torch.no_grad():
        assert model(inputs_for(model, batch=1)).shape == (1, 2)


def test_a_few_steps_on_a_separable_problem_make_the_loss_fall():
    torch.manual_seed(0)
    sizes = {"CT_bone": [6, 16, 16], "T1_sag": [4, 16, 16]}
    model = build_classifier({**TINY, "input_sizes": sizes})
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1] * 8)
    batch = {s: torch.rand(16, 1, *sizes[s], generator=g) * 0.2 for s in model.series}
    # class 1 carries a bright block in the axial series (a "stenosis" the branch has to find)
    batch["CT_bone"][labels == 1, :, 2:4, 6:10, 6:10] += 0.8
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch), labels)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# --- configuration and input checks ---------------------------------------------------------------------------------
def test_every_paper_pair_builds():
    for pair in PAPER_PAIRS:
        assert set(build_classifier({**TINY, "series": list(pair)}).series) == set(pair)


def test_reports_error_when_a_series_of_the_pair_is_missing():
    model = build_classifier({**TINY, "input_sizes": {"CT_bone": [6, 16, 16], "T1_sag": [4, 16, 16]}})
    with pytest.raises(CSpineInputError, match="T1_sag"):
        model({"CT_bone": torch.rand(1, 1, 6, 16, 16)})


def test_refuses_pairs_without_one_axial_and_one_sagittal_series():
    with pytest.raises(CSpineInputError, match="one axial and one sagittal"):
        order_pair(["T1_sag", "T2_sag"])
    with pytest.raises(CSpineInputError, match="must name two"):
        order_pair(["T1_sag", "PET"])
    with pytest.raises(CSpineInputError, match="unknown key"):
        build_classifier({"widht": [4, 4, 4, 4]})
