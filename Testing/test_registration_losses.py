"""Registration losses: local NCC, MIND-SSC, gradient smoothness, warped-label Dice, landmark loss, weighted sum."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from cspineai.losses import (
    RegistrationLoss,
    RegistrationLossWeights,
    gradient_loss,
    landmark_loss,
    local_ncc_loss,
    mind_loss,
    mind_ssc,
    warped_label_dice_loss,
)
from cspineai.nn.fpran import identity_grid


@pytest.fixture
def image() -> torch.Tensor:
    """A smooth random positive volume (1, 1, 12, 20, 20): structure everywhere, no flat patch."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 1, 12, 20, 20, generator=generator)
    return F.avg_pool3d(noise, 3, stride=1, padding=1, count_include_pad=False) + 0.1


def test_local_ncc_of_an_image_with_itself_is_minus_one(image):
    assert local_ncc_loss(image, image).item() == pytest.approx(-1.0, abs=1e-4)


def test_local_ncc_ignores_a_linear_contrast_change_including_inversion(image):
    assert local_ncc_loss(image, 1.0 - 3.0 * image).item() == pytest.approx(-1.0, abs=1e-4)


def test_local_ncc_of_unrelated_images_is_near_zero(image):
    other = torch.roll(image, shifts=(6, 10, 10), dims=(2, 3, 4))
    assert local_ncc_loss(image, other).item() > -0.3


def test_mind_ssc_has_twelve_channels_in_the_unit_interval(image):
    descriptor = mind_ssc(image)
    assert descriptor.shape == (1, 12, 12, 20, 20)
    assert descriptor.min() > 0 and descriptor.max() <= 1.0 + 1e-6


def test_mind_is_invariant_to_a_linear_intensity_map(image):
    assert mind_loss(image, 5.0 * image + 100.0).item() < 1e-8


def test_mind_barely_changes_under_a_monotone_intensity_map_but_sees_a_shift(image):
    monotone = mind_loss(image, torch.sqrt(image)).item()
    shifted = mind_loss(image, torch.roll(image, shifts=2, dims=4)).item()
    assert monotone < 0.1 * shifted


def test_mind_refuses_multichannel_input(image):
    with pytest.raises(ValueError, match="B, 1, D, H, W"):
        mind_ssc(image.repeat(1, 2, 1, 1, 1))


def test_gradient_loss_matches_the_hand_value_of_a_linear_ramp():
    # ψ_x = c * (W index): the only non-zero difference is c, in one of three components along one of three axes.
    c = 0.3
    field = torch.zeros(1, 3, 4, 5, 6)
    field[:, 0] = c * torch.arange(6.0)
    assert gradient_loss(field).item() == pytest.approx(c**2 / 9.0)


def test_gradient_loss_is_zero_for_a_translation_and_accepts_a_single_slice():
    assert gradient_loss(torch.full((2, 3, 1, 8, 8), 0.7)).item() == 0.0


def test_landmark_loss_measures_millimetres_between_mapped_and_true_points():
    grid = identity_grid((5, 6, 7), torch.zeros(1))
    mapping = grid + torch.tensor([0.1, 0.0, -0.2])  # a translation in moving normalised units
    fixed = torch.tensor([[[0.0, 0.0, 0.0], [0.5, -0.5, 0.25]]])
    moving = fixed + torch.tensor([0.1, 0.0, -0.2])
    mm = torch.tensor([[40.0, 30.0, 50.0]])
    assert landmark_loss(mapping, fixed, moving, mm).item() == pytest.approx(0.0, abs=1e-5)
    off = moving + torch.tensor([0.05, 0.0, 0.0])  # 0.05 units * 40 mm/unit = 2 mm
    assert landmark_loss(mapping, fixed, off, mm).item() == pytest.approx(2.0, abs=1e-4)
    valid = torch.tensor([[True, False]])
    assert landmark_loss(mapping, fixed, off, mm, valid).item() == pytest.approx(2.0, abs=1e-4)


def test_warped_label_dice_loss_is_zero_for_identical_labels():
    labels = torch.zeros(1, 3, 4, 6, 6)
    labels[:, 0], labels[:, 1, :, :3], labels[:, 2, :, 3:] = 1, 1, 1
    labels[:, 0, :, :, :] -= labels[:, 1] + labels[:, 2]
    assert warped_label_dice_loss(labels, labels).item() == pytest.approx(0.0, abs=1e-5)


def test_registration_loss_weights_each_term_as_configured(image):
    displacement = torch.zeros(1, 3, 12, 20, 20)
    displacement[:, 1] = 0.1 * torch.arange(20.0)[None, :, None]
    loss = RegistrationLoss({"similarity": "mind", "sim": 2.0, "reg": 0.5})
    total, terms = loss(image, torch.sqrt(image), displacement)
    assert set(terms) == {"sim", "reg"}
    assert total.item() == pytest.approx(2.0 * terms["sim"].item() + 0.5 * terms["reg"].item())


def test_registration_loss_weights_refuse_unknown_settings():
    with pytest.raises(ValueError, match="unknown registration loss settings"):
        RegistrationLossWeights.from_dict({"lambda_sim": 1.0})
    with pytest.raises(ValueError, match="similarity must be one of"):
        RegistrationLossWeights.from_dict({"similarity": "mutual_information"})
