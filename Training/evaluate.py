"""``python Training/evaluate.py --help``: the same as ``cspineai evaluate`` (see docs/training.md).

Runs with plain Python and with Slicer's own interpreter
(``Slicer --no-main-window --python-script Training/evaluate.py ...``), where ``cspineai`` may not be installed:
the repository's ``Logic/`` folder is then put on ``sys.path``. No Qt is used.
"""

import sys
from pathlib import Path

try:
    import cspineai  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Logic"))

from cspineai.training.main import evaluate_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(evaluate_main(sys.argv[1:]))
