"""``python Training/train.py --help``: the same as ``cspineai train`` (see docs/training.md).

Runs with plain Python, with ``torchrun --nproc_per_node=N`` (one process per GPU) and with Slicer's own interpreter
(``Slicer --no-main-window --python-script Training/train.py ...``), where ``cspineai`` may not be installed:
the repository's ``Logic/`` folder is then put on ``sys.path``. No Qt is used.
"""

import sys
from pathlib import Path

try:
    import cspineai  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Logic"))

from cspineai.training.main import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
