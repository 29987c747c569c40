"""What a training run tells its watchers: progress, per-epoch figures, final figures.

- Progress: a tqdm bar when standard output is a terminal; otherwise plain ``[cspineai-progress]`` lines
  (:func:`cspineai.progress.format_progress_line`) that Slicer's process runner parses back into a progress bar.
- ``metrics.csv``: one row per epoch, rewritten atomically from the run's history (so a resumed run's file holds every
  epoch exactly once).
- TensorBoard scalars under ``tensorboard/`` when the ``tensorboard`` package is installed (optional dependency).
- ``metrics.json``: the final figures, written once at the end.

Only rank 0 creates a :class:`RunLogger` that writes; other ranks get one with ``enabled=False``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

from ..atomic import atomic_write_text
from ..progress import format_progress_line


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, data: dict) -> Path:
    """JSON with non-finite floats as ``null``/``"inf"`` (strict JSON readers reject NaN), written atomically."""
    return atomic_write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")


def write_history_csv(path: str | Path, history: list[dict]) -> Path:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


class RunLogger:
    """Progress and figures of one run in ``output_dir``."""

    def __init__(self, output_dir: str | Path, total_epochs: int, enabled: bool = True, every_steps: int = 10,
                 tensorboard: bool = True, stream=None):
        self.output_dir = Path(output_dir)
        self.total_epochs = total_epochs
        self.enabled = enabled
        self.every_steps = max(1, every_steps)
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.output_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._writer = None

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)  # keeps the bar intact below the message
        else:
            print(text, file=self.stream, flush=True)

    def start_epoch(self, epoch: int, steps: int) -> None:
        self._epoch, self._steps = epoch, max(1, steps)
        if self.enabled and self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.total_epochs}", file=self.stream,
                             leave=False, dynamic_ncols=True)

    def step(self, step: int, loss: float) -> None:
        """Report training step ``step`` (1-based within the epoch)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4g}")
        elif step % self.every_steps == 0 or step == self._steps:
            fraction = (self._epoch + step / self._steps) / self.total_epochs
            print(format_progress_line("train", fraction, f"epoch {self._epoch + 1}/{self.total_epochs} "
                                       f"step {step}/{self._steps} loss {loss:.4g}"), file=self.stream, flush=True)

    def end_epoch(self, row: dict, history: list[dict]) -> None:
        """Close the epoch's bar, print its figures, rewrite ``metrics.csv`` and add TensorBoard scalars."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        figures = " ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
        line = f"epoch {row['epoch']}/{self.total_epochs} {figures}"
        if self.tty:
            print(line, file=self.stream, flush=True)
        else:
            print(format_progress_line("train", row["epoch"] / self.total_epochs, line), file=self.stream, flush=True)
        write_history_csv(self.output_dir / "metrics.csv", history)
        if self._writer is not None:
            for key, value in row.items():
                if isinstance(value, int | float) and key != "epoch":
                    self._writer.add_scalar(key, value, row["epoch"])
            self._writer.flush()

    def finish(self, metrics: dict) -> Path | None:
        if not self.enabled:
            return None
        if self._writer is not None:
            self._writer.close()
        return write_json(self.output_dir / "metrics.json", metrics)
