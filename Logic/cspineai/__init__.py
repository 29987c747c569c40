"""CSpineAI: CT/MRI assessment of cervical spondylosis.

Computation only: I/O and geometry, the synthetic cohort, networks, registration, prediction, saliency, segmentation,
morphometry, the model registry and the training engine.
Only :mod:`cspineai.scene` imports ``slicer``; nothing imports Qt.
"""

from .errors import CSpineCancelled, CSpineError, CSpineInputError, CSpineModelError
from .volume import Volume

__version__ = "0.1.0"
__all__ = ["CSpineCancelled", "CSpineError", "CSpineInputError", "CSpineModelError", "Volume", "__version__"]
