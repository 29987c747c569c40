"""Progress reporting shared by long jobs (pipeline, training) and whoever watches them (CLI, Slicer's process runner).

A job reports through a callback ``(step, fraction, message)``. When the job runs in a child process, the callback is
:func:`print_progress`, which writes one machine-readable line per update to standard output; the parent (the Slicer
module's process runner) turns each line back into a call with :func:`parse_progress_line`. Cancellation is checked
between steps through :class:`CancelToken`.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable

from .errors import CSpineCancelled

ProgressCallback = Callable[[str, float, str], None]

PREFIX = "[cspineai-progress]"
_LINE = re.compile(re.escape(PREFIX) + r" (?P<fraction>[0-9.]+) (?P<step>\S+)(?: (?P<message>.*))?$")


def format_progress_line(step: str, fraction: float, message: str = "") -> str:
    """One line: ``[cspineai-progress] 0.250 segment: running the network`` (fraction of the whole job in [0, 1])."""
    step = re.sub(r"\s+", "_", step.strip()) or "job"
    message = " ".join(message.split())  # one line, whatever the message held
    return f"{PREFIX} {min(max(float(fraction), 0.0), 1.0):.3f} {step}" + (f" {message}" if message else "")


def parse_progress_line(line: str) -> tuple[str, float, str] | None:
    """``(step, fraction, message)`` from a progress line, or None for any other output line."""
    match = _LINE.match(line.strip())
    if not match:
        return None
    return match["step"], float(match["fraction"]), match["message"] or ""


def print_progress(step: str, fraction: float, message: str = "") -> None:
    """Progress callback for a job running in a child process: print a progress line and flush at once."""
    print(format_progress_line(step, fraction, message), file=sys.stdout, flush=True)


def no_progress(step: str, fraction: float, message: str = "") -> None:
    """Progress callback that ignores updates."""


class CancelToken:
    """A flag set from another thread (or a signal handler) and checked by the job between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CSpineCancelled("the job was cancelled")
