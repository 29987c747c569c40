"""Run a long job (the case pipeline, a training run) in a separate process and report what it prints.

The core is Qt-free so that it is tested under pytest: a reader thread collects the child's output lines into a queue,
and the owner delivers them as callbacks on its own thread, either by calling :meth:`ProcessRunner.poll` from a timer
(Slicer's GUI thread: Qt objects must only be touched there) or by blocking in :meth:`ProcessRunner.wait` (tests,
scripts). Progress lines follow :mod:`cspineai.progress`; any other line is a log line.

Cancelling kills the whole process tree, not only the child: the pipeline may have started workers of its own, and a
worker left behind keeps the CPU (and the GPU memory) busy after the user pressed Cancel.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ProgressCallback = Callable[[str, float, str], None]
LineCallback = Callable[[str], None]

#: Lines that carry the reason of a failure, most specific first (the CLI prints ``error: ...`` for project errors).
_ERROR_LINE = re.compile(r"^(error:|\w*(Error|Exception|Cancelled)\b|Traceback)")


def _parseProgressLine(line: str) -> tuple[str, float, str] | None:
    # The progress protocol lives in cspineai.progress; the fallback keeps the runner usable (and testable) before the
    # cspineai package is importable in Slicer's own Python, e.g. while the dependencies are being installed.
    try:
        from cspineai.progress import parse_progress_line
    except ImportError:
        match = re.match(r"\[cspineai-progress\] (?P<f>[0-9.]+) (?P<s>\S+)(?: (?P<m>.*))?$", line.strip())
        return (match["s"], float(match["f"]), match["m"] or "") if match else None
    return parse_progress_line(line)


def summarizeFailure(lines: Sequence[str], returnCode: int) -> str:
    """A readable one-paragraph reason for a failed child: its last error line, else its last output line."""
    meaningful = [line.strip() for line in lines if line.strip() and _parseProgressLine(line) is None]
    errors = [line for line in meaningful if _ERROR_LINE.match(line) and not line.startswith("Traceback")]
    reason = errors[-1] if errors else (meaningful[-1] if meaningful else "the process printed nothing")
    reason = reason.removeprefix("error:").strip()
    return f"{reason} (exit status {returnCode})"


class ProcessRunner:
    """Runs one command at a time in a child process, with progress, log, finished, error and cancelled callbacks.

    Callbacks (all optional, called on the thread that calls :meth:`poll` or :meth:`wait`, in the order of the output):
      - ``onProgress(step, fraction, message)``: a progress line; fraction of the whole job in [0, 1].
      - ``onLog(line)``: any other output line (stdout and stderr are merged, so errors appear in order).
      - ``onFinished()``: the child exited with status 0.
      - ``onError(message)``: the child failed; ``message`` is its last error line and exit status.
      - ``onCancelled()``: :meth:`cancel` stopped the child.
    Exactly one of the last three is called per run.
    """

    def __init__(
        self,
        onProgress: ProgressCallback | None = None,
        onLog: LineCallback | None = None,
        onFinished: Callable[[], None] | None = None,
        onError: LineCallback | None = None,
        onCancelled: Callable[[], None] | None = None,
        killGraceSeconds: float = 2.0,
    ) -> None:
        self.onProgress = onProgress
        self.onLog = onLog
        self.onFinished = onFinished
        self.onError = onError
        self.onCancelled = onCancelled
        self.killGraceSeconds = killGraceSeconds
        self._process: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._cancelRequested = False
        self._done = True
        self._lines: list[str] = []

    @property
    def isRunning(self) -> bool:
        """True from :meth:`start` until the final callback has been delivered."""
        return not self._done

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(
        self, command: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | Path | None = None
    ) -> None:
        """Start ``command`` (a list of arguments; no shell) and return at once."""
        if self.isRunning:
            raise RuntimeError("a job is already running: wait for it to finish or cancel it first")
        childEnv = dict(os.environ if env is None else env)
        childEnv["PYTHONUNBUFFERED"] = "1"  # progress lines must arrive as they are printed, not when a buffer fills
        kwargs: dict = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # own process group, so cancel() reaches the grandchildren too
        self._events = queue.Queue()
        self._lines = []
        self._cancelRequested = False
        self._process = subprocess.Popen(
            [str(arg) for arg in command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=childEnv,
            cwd=None if cwd is None else str(cwd),
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._done = False
        self._reader = threading.Thread(target=self._readOutput, args=(self._process,), daemon=True)
        self._reader.start()

    def _readOutput(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self._events.put(("line", line.rstrip("\r\n")))
        process.stdout.close()
        self._events.put(("exit", process.wait()))

    def poll(self) -> bool:
        """Deliver every queued event as a callback; returns True while the job is still running."""
        while True:
            try:
                kind, value = self._events.get_nowait()
            except queue.Empty:
                return self.isRunning
            self._deliver(kind, value)

    def wait(self, timeout: float | None = None) -> bool:
        """Block, delivering callbacks, until the job ends; returns False if ``timeout`` (s) passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.isRunning:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                kind, value = self._events.get(timeout=0.1 if remaining is None else min(remaining, 0.1))
            except queue.Empty:
                continue
            self._deliver(kind, value)
        return True

    def _deliver(self, kind: str, value) -> None:
        if kind == "line":
            self._lines.append(value)
            del self._lines[:-200]  # the failure message needs the tail only
            progress = _parseProgressLine(value)
            if progress is not None:
                if self.onProgress:
                    self.onProgress(*progress)
            elif self.onLog:
                self.onLog(value)
            return
        self._done = True
        if self._cancelRequested:
            if self.onCancelled:
                self.onCancelled()
        elif value == 0:
            if self.onFinished:
                self.onFinished()
        elif self.onError:
            self.onError(summarizeFailure(self._lines, value))

    def cancel(self) -> None:
        """Kill the child and all its descendants; the cancelled callback follows on the next poll/wait."""
        process = self._process
        if process is None or self._done:
            return
        # A child that has already exited delivers its own outcome (finished or failed), not "cancelled"; what it
        # may have left running in its group is still killed.
        self._cancelRequested = process.poll() is None
        killProcessTree(process, self.killGraceSeconds)


def killProcessTree(process: subprocess.Popen, graceSeconds: float = 2.0) -> None:
    """Terminate a child started by :class:`ProcessRunner` and its descendants; kill them if they outlive the grace."""
    if sys.platform == "win32":
        # taskkill /T walks the tree by parent pid; Windows has no process groups that signals could reach.
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
        process.wait()
        return
    group = process.pid  # start_new_session made the child the leader of its own group; valid after it exited too
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    # Give the whole group (not only the child) the grace period to clean up, then kill whatever is left: a grandchild
    # that ignores SIGTERM, or one still writing its files.
    deadline = time.monotonic() + graceSeconds
    while time.monotonic() < deadline:
        process.poll()  # reap the child, or its zombie would keep the group "alive"
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
