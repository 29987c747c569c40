"""The module's typed parameter node: what the panel shows, saved with the scene.

Every field is bound to the widget of ``Resources/UI/CSpineAI.ui`` whose dynamic property ``SlicerParameterName`` names
it (``connectGui``); a test checks that each name in the .ui is a field here. Model ids are kept here but chosen from
the registry list by the widget, because the list is only known at run time.
"""

# No "from __future__ import annotations": parameterNodeWrapper reads the field types, which must be real objects on
# Slicer versions that do not resolve string annotations.
from pathlib import Path
from typing import Annotated

import slicer
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from .Logic import SALIENCY_METHODS

#: Parameter field of each series' input volume (the series names of ``cspineai.series``).
SERIES_FIELDS = {"CT_bone": "ctBone", "CT_tissue": "ctTissue", "T1_sag": "t1Sag", "T2_sag": "t2Sag", "T2_tra": "t2Tra"}
#: Parameter field of each pipeline step (the ``--steps`` values of ``cspineai run``).
STEP_FIELDS = {
    "register": "stepRegister",
    "predict": "stepPredict",
    "saliency": "stepSaliency",
    "segment": "stepSegment",
    "measure": "stepMeasure",
}
#: Parameter field of each model role of the registry.
MODEL_FIELDS = {
    "registration": "registrationModel",
    "classifier": "classifierModel",
    "segmentation": "segmentationModel",
}


@parameterNodeWrapper
class Parameter:
    # Inputs: one volume per series; any subset the chosen steps need.
    ctBone: slicer.vtkMRMLScalarVolumeNode
    ctTissue: slicer.vtkMRMLScalarVolumeNode
    t1Sag: slicer.vtkMRMLScalarVolumeNode
    t2Sag: slicer.vtkMRMLScalarVolumeNode
    t2Tra: slicer.vtkMRMLScalarVolumeNode

    # Steps of the pipeline.
    stepRegister: bool = True
    stepPredict: bool = True
    stepSaliency: bool = True
    stepSegment: bool = True
    stepMeasure: bool = True

    # Saliency method (Logic.SALIENCY_METHODS, the pipeline's default first) and display of the heatmap over the MRI
    # (foreground layer opacity in [0, 1]).
    saliencyMethod: Annotated[str, Choice(list(SALIENCY_METHODS))] = SALIENCY_METHODS[0]
    showSaliency: bool = True
    saliencyOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5

    # Models and device; an empty model id means the registry's default for that role.
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    registrationModel: str = ""
    classifierModel: str = ""
    segmentationModel: str = ""

    outputDirectory: Path = Path()

    # Fine-tuning.
    trainingManifest: Path = Path()
    trainingConfig: Path = Path()
    trainingOutputDirectory: Path = Path()
    # Start from the model chosen in the Models section for the configuration's task (off: random weights).
    trainingFromSelectedModel: bool = True

    def inputNodes(self) -> dict:
        """Selected volume node per series (series without a selection are left out)."""
        nodes = {series: getattr(self, field) for series, field in SERIES_FIELDS.items()}
        return {series: node for series, node in nodes.items() if node is not None}

    def steps(self) -> list[str]:
        """Chosen steps in pipeline order."""
        return [step for step, field in STEP_FIELDS.items() if getattr(self, field)]

    def models(self) -> dict[str, str]:
        """Chosen model id per role; roles left on the registry default are omitted."""
        return {role: getattr(self, field) for role, field in MODEL_FIELDS.items() if getattr(self, field)}
