"""Shared doubles and fixtures of the pipeline tests (no tests here).

The pipeline's networks are stood in for by freshly initialised small networks (registration, classifier: they run the
real code paths with untrained weights) and, for segmentation, by :class:`OracleSegmenter`, a network that returns the
phantom's true labels on the working grid. An untrained segmentation network finds no cord, and the steps after it
(morphometry, the scene's CSA checks) need a cord of human size: the oracle gives exactly that, so these tests check the
plumbing around the networks (grids, files, scene), not a trained model.
"""

from __future__ import annotations

import numpy as np
import torch

from cspineai.geometry import resample_like
from cspineai.pipeline import PipelineModel
from cspineai.segmentation import SegmentationConfig, working_grid
from cspineai.series import SEGMENTATION_CLASSES
from cspineai.volume import Volume

#: Phantom case of the pipeline tests and the demo resolution (fast).
SEED = 0
RESOLUTION = "coarse"


class OracleSegmenter(torch.nn.Module):
    """A 3-D "network" whose logits are the one-hot true labels of one MRI on the segmentation working grid.

    It is used with a :class:`SegmentationConfig` whose single sliding window covers the whole working grid, so the
    pipeline's resampling to and from the working grid, the clean-up and the level assignment all run for real.
    """

    def __init__(self, mri: Volume, labels: Volume):
        super().__init__()
        base = SegmentationConfig(spatial_dims=3, roi_size=(1, 1, 1))
        grid = working_grid(mri, base)
        self.config = SegmentationConfig(spatial_dims=3, roi_size=tuple(grid.shape), sw_batch_size=1)
        on_grid = resample_like(labels.with_array(labels.array.astype(np.uint8)), grid, "nearest").array
        index = np.zeros(256, dtype=np.int64)
        for channel, value in enumerate(SEGMENTATION_CLASSES):
            index[value] = channel
        classes = torch.from_numpy(index[on_grid])
        logits = torch.nn.functional.one_hot(classes, len(SEGMENTATION_CLASSES)).permute(3, 0, 1, 2).float() * 20.0
        self.register_buffer("logits", logits[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != tuple(self.logits.shape[2:]):
            raise AssertionError(f"oracle asked for {tuple(x.shape[2:])}, knows {tuple(self.logits.shape[2:])}")
        return self.logits.expand(x.shape[0], -1, -1, -1, -1)


def small_models(case, segmented: str = "T2_sag") -> dict[str, PipelineModel]:
    """Untrained small registration and classifier networks and the oracle segmenter, seeded (deterministic)."""
    from cspineai.nn.classifier import build_classifier
    from cspineai.nn.fpran import RegistrationNet

    torch.manual_seed(0)
    classifier = build_classifier({"series": ["T1_sag", "CT_bone"], "widths": [4, 8, 8, 16]})
    with torch.no_grad():
        # Untrained weights of mixed sign can leave a Grad-CAM map all zero (its ReLU); a pain-class head with positive
        # weights makes every last-stage channel count as evidence, so each branch has a non-zero map.
        classifier.head.weight[1].abs_()
        classifier.head.weight[0].copy_(-classifier.head.weight[1])
    registration = RegistrationNet(channels=(4, 8, 8, 16), hidden=8)
    oracle = OracleSegmenter(case.series[segmented], case.labels[segmented])
    return {
        "registration": PipelineModel("registration", registration, "test-fpran", options={"method": "fpran"}),
        "classifier": PipelineModel("classifier", classifier, "test-classifier", threshold=0.4,
                                    inputs=tuple(classifier.series)),
        "segmentation": PipelineModel("segmentation", oracle, "test-oracle", inputs=(segmented,),
                                      options={"config": oracle.config}),
    }
