"""Dice and HD95 against hand-computed examples and MONAI's own metric classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cspineai.errors import CSpineInputError
from cspineai.metrics.segmentation import dice_scores, hd95_scores, segmentation_report


def test_dice_of_hand_counted_overlaps():
    ref = np.zeros((1, 4, 4), int)
    pred = np.zeros((1, 4, 4), int)
    ref[0, :2, :2] = 1  # 4 voxels
    pred[0, :2, :3] = 1  # 6 voxels, 4 shared
    ref[0, 3, 3] = 2
    assert dice_scores(pred, ref) == {1: pytest.approx(8 / 10), 2: 0.0}


def test_dice_of_a_label_absent_from_both_maps_is_nan():
    a = np.zeros((2, 2, 2), int)
    assert np.isnan(dice_scores(a, a, labels=[1])[1])


def test_dice_agrees_with_monai_dice_metric(rng):
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    pred = rng.integers(0, 3, (6, 8, 8))
    ref = rng.integers(0, 3, (6, 8, 8))
    metric = DiceMetric(include_background=False, reduction="none")
    to_onehot = lambda a: one_hot(torch.from_numpy(a)[None, None], 3)  # noqa: E731
    expected = metric(to_onehot(pred), to_onehot(ref))[0].numpy()
    ours = dice_scores(pred, ref)
    assert [ours[1], ours[2]] == pytest.approx(expected.tolist())


def test_hd95_of_two_shifted_cubes_is_the_shift_in_millimetres():
    ref = np.zeros((12, 12, 12), int)
    pred = np.zeros_like(ref)
    ref[3:8, 3:8, 3:8] = 1
    pred[3:8, 3:8, 5:10] = 1  # shifted by 2 voxels along i
    # spacing (si, sj, sk): i voxels are 0.5 mm, so the 2-voxel shift along i is 1 mm.
    assert hd95_scores(pred, ref, spacing=(0.5, 1.0, 3.0))[1] == pytest.approx(1.0)
    # The same shift along k (3 mm slices) is 6 mm: spacing is matched to the right array axis.
    pred_k = np.zeros_like(ref)
    pred_k[5:10, 3:8, 3:8] = 1
    assert hd95_scores(pred_k, ref, spacing=(0.5, 1.0, 3.0))[1] == pytest.approx(6.0)


def test_hd95_of_an_unpredicted_structure_is_infinite():
    ref = np.zeros((4, 4, 4), int)
    ref[1:3, 1:3, 1:3] = 1
    assert hd95_scores(np.zeros_like(ref), ref)[1] == float("inf")


def test_report_names_labels_and_averages_finite_values():
    ref = np.zeros((8, 8, 8), int)
    ref[2:5, 2:5, 2:5] = 1
    ref[5:7, 5:7, 5:7] = 2
    report = segmentation_report(ref, ref, spacing=(1, 1, 1), names={1: "cord", 2: "csf"})
    assert report["dice_cord"] == 1.0 and report["hd95_csf"] == 0.0 and report["dice_mean"] == 1.0


def test_refuses_label_maps_of_different_shapes():
    with pytest.raises(CSpineInputError, match="differs"):
        dice_scores(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
