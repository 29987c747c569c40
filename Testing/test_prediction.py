"""predict_pain on generated series with a randomly initialised classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cspineai.errors import CSpineInputError
from cspineai.nn.classifier import build_classifier
from cspineai.prediction import PainPrediction, predict_pain
from cspineai.volume import Volume

SAGITTAL = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)
SIZES = {"CT_bone": [8, 24, 24], "T1_sag": [4, 32, 32]}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_classifier({"widths": [4, 8, 8, 8], "input_sizes": SIZES})


@pytest.fixture
def case(rng):
    ct = Volume(rng.normal(200.0, 300.0, (20, 60, 60)).astype(np.float32), (1.0, 1.0, 3.0), (-30, -30, -30),
                np.eye(3), source="ct.nii.gz")
    t1 = Volume(rng.normal(500.0, 100.0, (10, 64, 64)).astype(np.float32), (1.0, 1.0, 4.0), (-20, -32, 32),
                SAGITTAL, source="t1.nii.gz")
    return {"CT_bone": ct, "T1_sag": t1}


def test_prediction_is_the_softmax_of_the_classifier_on_the_prepared_series(model, case):
    prediction = predict_pain(case, model)
    assert isinstance(prediction, PainPrediction) and 0.0 <= prediction.probability <= 1.0
    assert prediction.series == ("CT_bone", "T1_sag")
    batch = {s: prediction.inputs[s].tensor[None] for s in prediction.series}
    with torch.no_grad():
        logits = model(batch)[0].double()
    assert prediction.probability == pytest.approx(float(torch.softmax(logits, 0)[1]), abs=1e-6)
    for name, size in SIZES.items():
        assert prediction.inputs[name].grid.shape == tuple(size)
        assert prediction.features[name].shape == (8,)


def test_other_series_of_the_case_are_ignored(model, case):
    extra = {**case, "T2_sag": None, "CT_tissue": case["CT_bone"]}
    assert predict_pain(extra, model).probability == pytest.approx(predict_pain(case, model).probability)


def test_reports_error_naming_the_missing_series(model, case):
    with pytest.raises(CSpineInputError, match="T1_sag"):
        predict_pain({"CT_bone": case["CT_bone"]}, model)


def test_reports_error_naming_a_two_dimensional_series(model, case):
    flat = Volume(np.random.default_rng(1).random((1, 60, 60)), (1.0, 1.0, 3.0), source="ct_scout.nii.gz")
    with pytest.raises(CSpineInputError, match=r"CT_bone series \(ct_scout.nii.gz\).*2-D"):
        predict_pain({**case, "CT_bone": flat}, model)
