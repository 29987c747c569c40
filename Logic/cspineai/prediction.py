"""Postoperative neck-pain prediction for one case: series in, probability and per-branch features out.

Used by the pipeline, the ``predict`` command and the Slicer module. The model is a
:class:`~cspineai.nn.classifier.TwoBranchClassifier` (from the registry, or any built by
:func:`~cspineai.nn.classifier.build_classifier`); its configuration names the two series it reads and their working
sizes, so preprocessing always matches what the model was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from .preprocess import PreparedSeries, model_grids, prepare_case
from .volume import Volume

#: Registry id of the shipped neck-pain classifier (T1_sag + CT_bone, ABPDC).
DEFAULT_MODEL_ID = "pain-abpdc-t1sag-ctbone"

#: Class index of "pain" in the classifier's two outputs (0: no pain / relief, 1: pain).
PAIN_CLASS = 1


@dataclasses.dataclass
class PainPrediction:
    """The outcome of :func:`predict_pain`.

    Attributes:
        probability: P(postoperative neck pain), softmax of the two logits, in [0, 1].
        logits: the two raw outputs ``(no pain, pain)``.
        features: per series, the pooled last-level feature vector ``(C,)`` that entered the linear head.
        inputs: per series, the normalised working-grid image the branch saw (its :class:`Volume` maps voxels, and
            saliency maps on that grid, back to LPS/RAS mm).
        series: the two series, axial branch first.
    """

    probability: float
    logits: np.ndarray
    features: dict[str, np.ndarray]
    inputs: dict[str, PreparedSeries]
    series: tuple[str, ...]


def predict_pain(series: Mapping[str, Volume | None], model, device: str | None = None) -> PainPrediction:
    """Predict postoperative neck pain for one case.

    Args:
        series: series name -> :class:`Volume` (as read by :func:`cspineai.io.read_volume`); series the model does
            not read are ignored.
        model: a two-branch classifier; switched to eval mode.
        device: where to run (default: where the model's parameters are).

    Raises:
        CSpineInputError: a series the model needs is missing, 2-D, unusable or acquired in the wrong plane (the
            message names it). Nothing is computed before every input has been checked.
    """
    import torch

    prepared = prepare_case(series, model.series, model_grids(model))
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    batch = {name: p.tensor[None].to(device) for name, p in prepared.items()}
    with torch.no_grad():
        out = model(batch, return_features=True)
    logits = out.logits[0].double().cpu()
    probability = float(torch.softmax(logits, dim=0)[PAIN_CLASS])
    features = {name: f[0].cpu().numpy() for name, f in out.features.items()}
    return PainPrediction(probability, logits.numpy(), features, prepared, tuple(model.series))


__all__ = ["PAIN_CLASS", "PainPrediction", "predict_pain"]
