"""CSpineAI: CT + MRI assessment of cervical spondylosis in 3D Slicer (module shell; the code is in CSpineAILib)."""

import importlib
import tempfile
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

#: Submodules of CSpineAILib in dependency order, for the developer's "Reload".
LIB_MODULES = ("ProcessRunner", "InstallLogic", "Logic", "Parameter", "Widget")


class CSpineAI(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CSpineAI"
        self.parent.categories = ["Spine"]
        self.parent.dependencies = []
        self.parent.contributors = ["CSpineAI contributors (https://github.com/cspineai/SlicerCSpineAI)"]
        self.parent.helpText = (
            "Assessment of cervical spondylosis from CT and MRI: CT-to-MRI registration (FPRAN), prediction of "
            "postoperative neck pain (ABPDC two-branch classifier) with saliency heatmaps, spinal cord segmentation "
            "(SAttisUNet) and cord morphometry (cross-sectional area per level). Select the series in Inputs, choose "
            "the steps and press Run: the work runs in a separate process and can be cancelled; results are loaded "
            "into the scene and written to the output folder (report.json, report.pdf). "
            "Research use only, not for diagnosis. "
            '<a href="https://github.com/cspineai/SlicerCSpineAI/blob/main/docs/slicer.md">Documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "CSpineAI implements methods from: "
            "J. Shan, Q. Yu, J. Liu, S. Zhang, W. Shen, Y. Zhao, T. Wang, X. Lan, X. Qin, Y. Yin, "
            "<i>A multimodal cross-view model for predicting postoperative neck pain in cervical spondylosis "
            "patients</i> "
            "(ABPDC, FPRAN); "
            "M. Tavakol Elahi, <i>Toward deep learning-based segmentation and quantitative analysis of cervical spinal "
            "cord magnetic resonance images</i> (SAttisUNet, cord morphometry). "
            "Image and clinical-table fusion follows J. Yu, R. Ge, et al., <i>Small lesions-aware bidirectional "
            "multimodal multiscale fusion network for lung disease classification</i> (MMCAF-Net). "
            "Built on 3D Slicer, MONAI, PyTorch and SimpleITK; the module layout follows SlicerNNUnet (Kitware)."
        )


class CSpineAIWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from CSpineAILib.Widget import Widget

        self.widget = Widget()
        self.logic = self.widget.logic
        self.layout.addWidget(self.widget)

    def cleanup(self):
        if getattr(self, "widget", None) is not None:
            self.widget.cleanup()

    def onReload(self):
        # Reload the library too, not only this file, so that edits in CSpineAILib take effect without a restart.
        for name in LIB_MODULES:
            module = importlib.import_module(f"CSpineAILib.{name}")
            importlib.reload(module)
        importlib.reload(importlib.import_module("CSpineAILib"))
        ScriptedLoadableModuleWidget.onReload(self)


class CSpineAITest(ScriptedLoadableModuleTest):
    """Runs the scene assertions of ``cspineai.scene.selftest`` in the application (pytest runs them against
    slicer-core)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from CSpineAILib.Logic import ensureImportable, findPackageRoot

        ensureImportable(findPackageRoot())
        self.setUp()
        self.test_scene_nodes()
        self.setUp()
        self.test_pipeline_case()

    def test_scene_nodes(self):
        from cspineai.scene import get_context, selftest

        with tempfile.TemporaryDirectory() as folder:
            report = selftest.run_scene_self_test(get_context(), Path(folder))
        self.delayDisplay(f"Scene self-test passed: {report}")

    def test_pipeline_case(self):
        from cspineai.scene import get_context, selftest

        with tempfile.TemporaryDirectory() as folder:
            try:
                report = selftest.run_pipeline_self_test(get_context(), Path(folder), device="cpu")
            except selftest.SelfTestUnavailable as reason:
                self.skipTest(str(reason))
        self.delayDisplay(f"Pipeline self-test passed: {report}")
