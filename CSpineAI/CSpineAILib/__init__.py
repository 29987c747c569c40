"""The CSpineAI module's code, one class per file.

``Widget`` and ``Parameter`` need Slicer's Qt application; the other classes do not, so they are imported lazily here
and the Qt-free ones (``Logic``, ``InstallLogic``, ``ProcessRunner``) import under plain pytest.
"""

from __future__ import annotations

import importlib

_CLASSES = {
    "InstallLogic": "InstallLogic",
    "Logic": "Logic",
    "Parameter": "Parameter",
    "ProcessRunner": "ProcessRunner",
    "Widget": "Widget",
}

__all__ = list(_CLASSES)


def __getattr__(name: str):
    if name not in _CLASSES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_CLASSES[name]}", __name__), name)
