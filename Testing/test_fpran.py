"""FPRAN: header-derived base transform, zero-initialised start, pyramid handling, and the exported field."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F  # noqa: N812

from cspineai.geometry import index_to_world, reorient, resample_like
from cspineai.losses import RegistrationLoss
from cspineai.nn.fpran import (
    FPRAN,
    CrossAttentionSAM,
    LightPyramidEncoder,
    RegistrationNet,
    base_transform_from_volumes,
    identity_grid,
    index_to_normalised,
)
from cspineai.registration import displacement_transform, normalise_intensity, register, working_grids
from cspineai.volume import Volume
from test_registration import make_pair


@pytest.fixture(scope="module")
def pair() -> dict:
    return make_pair()


@pytest.fixture
def net() -> RegistrationNet:
    torch.manual_seed(0)
    return RegistrationNet(channels=(4, 8, 8, 16), hidden=16)


SPACING = 3.0  # mm, FPRAN's working resolution in these tests: coarse enough to keep them fast


def working_tensors(pair: dict, spacing: float = SPACING) -> tuple[Volume, Volume, torch.Tensor, ...]:
    """CT and MRI working grids, the base transform R, and the normalised CT and MRI tensors (1, 1, D, H, W)."""
    ct_w, mri_w = working_grids(pair["ct"], pair["mri"], spacing)
    base = torch.as_tensor(base_transform_from_volumes(mri_w, ct_w), dtype=torch.float32)
    ct_t = torch.from_numpy(normalise_intensity(ct_w.array))[None, None]
    mri_t = torch.from_numpy(normalise_intensity(mri_w.array))[None, None]
    return ct_w, mri_w, base, ct_t, mri_t


def perturb(net: RegistrationNet) -> RegistrationNet:
    """Give the zero-initialised last layers values, so the network predicts a non-trivial affine and displacement."""
    with torch.no_grad():
        affine = [0.03, 0.02, 0, 0.04, 0, -0.03, 0.02, 0.05, 0, 0, 0, 0.06]
        net.fpran.level4.affine.params.bias.copy_(torch.tensor(affine))
        net.fpran.fine[2].head.bias.copy_(torch.tensor([0.8, -0.5, 0.3]))  # voxels of the level-1 grid
        torch.nn.init.normal_(net.fpran.fine[2].head.weight, std=0.02)
    return net


def test_base_transform_maps_mri_voxels_to_the_ct_voxels_at_the_same_physical_point(pair, rng):
    ct_w, mri_w = working_grids(pair["ct"], pair["mri"], None)
    base = base_transform_from_volumes(mri_w, ct_w)
    mri_index = rng.uniform(0, np.array(mri_w.size_ijk) - 1, size=(20, 3))
    u_mri = np.c_[mri_index, np.ones(20)] @ index_to_normalised(mri_w.size_ijk).T
    u_ct = u_mri @ base.T
    ct_index = (u_ct @ np.linalg.inv(index_to_normalised(ct_w.size_ijk)).T)[:, :3]
    np.testing.assert_allclose(index_to_world(ct_w, ct_index), index_to_world(mri_w, mri_index), atol=1e-9)
    # The axial -> sagittal part is an axis permutation: each MRI axis moves one CT axis only.
    assert np.count_nonzero(np.abs(base[:3, :3]) > 1e-12) == 3


def test_fresh_network_reproduces_the_header_alignment_exactly(pair, net):
    ct_w, mri_w, base, ct_t, mri_t = working_tensors(pair)
    with torch.no_grad():
        out = net(ct_t, mri_t, base)
    assert torch.equal(out.displacement, torch.zeros_like(out.displacement))
    torch.testing.assert_close(out.affine[0], base)
    expected_grid = F.affine_grid(base[None, :3], (1, 1, *mri_t.shape[2:]), align_corners=True)
    torch.testing.assert_close(out.mapping, expected_grid, atol=1e-5, rtol=0)
    # The warped CT is the CT resampled onto the MRI grid by SimpleITK through the headers alone.
    reference = resample_like(ct_w.with_array(ct_t[0, 0].numpy()), mri_w, "linear").array
    inside = out.mapping[0].abs().amax(dim=-1).numpy() < 0.98  # away from the CT border, where padding rules differ
    np.testing.assert_allclose(out.warped_ct[0, 0].numpy()[inside], reference[inside], atol=1e-4)


def test_register_with_a_fresh_network_leaves_the_ct_on_the_header_alignment(pair, net):
    result = register(pair["ct"], pair["mri"], model=net, method="fpran", spacing_mm=SPACING)
    identity = register(pair["ct"], pair["mri"], method="identity")
    assert np.abs(result.displacement_ras).max() < 1e-3  # mm: float32 round-off of the normalised mapping
    np.testing.assert_allclose(result.warped_ct.array, identity.warped_ct.array, atol=0.05)
    assert result.folding_percent == 0.0


def test_exported_field_reproduces_the_torch_warp_on_a_reoriented_mri(pair, net):
    perturb(net)
    # An MRI stored in another index order (A, I, R): FPRAN works on the canonical grid, the field must come back here.
    mri = Volume.from_sitk(sitk.DICOMOrient(pair["mri"].to_sitk(), "AIR"), "T1_sag", "mri")
    result = register(pair["ct"], mri, model=net, method="fpran", spacing_mm=SPACING)
    assert result.displacement_ras.shape == (*mri.shape, 3) and np.abs(result.displacement_ras).max() > 1.0

    ct_w, mri_w, base, ct_t, mri_t = working_tensors({"ct": pair["ct"], "mri": mri})
    with torch.no_grad():
        torch_warped = net(ct_t, mri_t, base).warped_ct[0, 0].numpy()
    exported = resample_like(ct_w.with_array(ct_t[0, 0].numpy()), mri_w, "linear", transform=result.to_sitk_transform())
    value_range = float(ct_t.max() - ct_t.min())
    assert np.count_nonzero(torch_warped) > 0.5 * torch_warped.size  # the CT still overlaps: the check is not vacuous
    assert np.mean(np.abs(exported.array - torch_warped)) < 0.01 * value_range
    reversed_field = displacement_transform(-result.displacement_lps.astype(float), mri)
    wrong = resample_like(ct_w.with_array(ct_t[0, 0].numpy()), mri_w, "linear", transform=reversed_field)
    assert np.mean(np.abs(wrong.array - torch_warped)) > 0.03 * value_range  # a sign error would be caught


def test_slice_axis_is_halved_only_while_longer_than_the_kernel():
    encoder = LightPyramidEncoder(1, (2, 2, 2, 2))
    shapes = [tuple(f.shape[2:]) for f in encoder(torch.zeros(1, 1, 7, 64, 64))]
    assert shapes == [(4, 32, 32), (2, 16, 16), (2, 8, 8), (2, 4, 4)]


def test_fpran_accepts_backbone_pyramids_with_their_own_channels_and_a_half_resolution_first_level():
    torch.manual_seed(0)
    model = FPRAN(ct_channels=(8, 16, 24, 32), mri_channels=(6, 12, 18, 24), hidden=16)
    ct = [torch.randn(2, c, d, s, s) for c, d, s in ((8, 16, 24), (16, 8, 12), (24, 4, 6), (32, 2, 3))]
    mri = [torch.randn(2, c, d, s, s) for c, d, s in ((6, 5, 32), (12, 5, 16), (18, 5, 8), (24, 5, 4))]
    ct_image = torch.rand(2, 1, 32, 48, 48)
    out = model(ct, mri, torch.eye(4), ct_image=ct_image, mri_size=(10, 64, 64))
    assert out.displacement.shape == (2, 3, 10, 64, 64) and out.mapping.shape == (2, 10, 64, 64, 3)
    assert out.warped_ct.shape == (2, 1, 10, 64, 64)
    assert [tuple(p.shape[2:]) for p in out.levels] == [(5, 4, 4), (5, 8, 8), (5, 16, 16), (5, 32, 32)]


def test_registration_loss_reaches_the_zero_initialised_layers(pair, net):
    _, _, base, ct_t, mri_t = working_tensors(pair)
    out = net(ct_t, mri_t, base)
    total, _ = RegistrationLoss({"similarity": "mind"})(mri_t, out.warped_ct, out.displacement_voxels)
    total.backward()
    for head in (net.fpran.level4.head, *(sam.head for sam in net.fpran.fine)):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert net.fpran.level4.affine.params.weight.grad.abs().sum() > 0


def test_image_level_starts_from_the_four_level_models_exact_output_and_refines_at_the_image_grid(pair, net):
    from cspineai.training.init_from import fitting_weights, weight_mismatches

    _, mri_w, base, ct_t, mri_t = working_tensors(pair)
    four = perturb(net).eval()
    five = RegistrationNet(**{**four.config, "image_level": True}).eval()
    weights = fitting_weights(five, four.state_dict())
    assert weight_mismatches(five, weights) == []
    five.load_state_dict(weights)
    before, after = four(ct_t, mri_t, base), five(ct_t, mri_t, base)
    torch.testing.assert_close(after.mapping, before.mapping, rtol=0, atol=1e-6)
    assert tuple(after.levels[-1].shape[2:]) == mri_w.shape  # psi0 lives on the working image grid
    total, _ = RegistrationLoss({"similarity": "mind"})(mri_t, after.warped_ct, after.displacement_voxels)
    total.backward()
    assert five.fpran.fine[3].head.weight.grad.abs().sum() > 0
    with torch.no_grad():
        five.fpran.fine[3].head.bias.copy_(torch.tensor([0.5, 0.0, 0.0]))
    moved = five(ct_t, mri_t, base).mapping
    assert (moved - before.mapping).abs().max() > 1e-3


def test_fpran_refuses_a_pyramid_with_another_number_of_levels():
    model = FPRAN(ct_channels=(4, 8, 8, 16), mri_channels=(4, 8, 8, 16), hidden=16)
    ct = [torch.randn(1, c, 4, 8, 8) for c in (4, 4, 8, 8, 16)]
    with pytest.raises(ValueError, match="built for 4 pyramid levels, got 5"):
        model(ct, ct, torch.eye(4))


def test_level4_attention_refuses_a_grid_over_its_memory_bound():
    sam = CrossAttentionSAM(4, 4, hidden=8, max_tokens=100)
    with pytest.raises(ValueError, match="over the attention's bound"):
        sam(torch.zeros(1, 4, 4, 8, 8), torch.zeros(1, 4, 4, 8, 8), torch.eye(4)[None])


def test_identity_grid_spans_minus_one_to_one_in_x_y_z_order():
    grid = identity_grid((3, 4, 5), torch.zeros(1))
    assert grid.shape == (1, 3, 4, 5, 3)
    torch.testing.assert_close(grid[0, 0, 0, :, 0], torch.linspace(-1, 1, 5))
    torch.testing.assert_close(grid[0, :, 0, 0, 2], torch.linspace(-1, 1, 3))


def test_reoriented_working_grids_keep_their_physical_geometry(pair):
    ct_w, mri_w = working_grids(pair["ct"], pair["mri"], 1.5)
    assert mri_w.plane == "sagittal" and ct_w.plane == "axial"
    assert reorient(pair["mri"]).shape == mri_w.shape
