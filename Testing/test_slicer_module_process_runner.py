"""The Slicer module's process runner, without Qt: real child processes, progress, failures, cancelling the tree."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CSpineAI"))

from cspineai.progress import format_progress_line  # noqa: E402
from CSpineAILib.ProcessRunner import ProcessRunner, summarizeFailure  # noqa: E402


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def _recording_runner(**kwargs) -> tuple[ProcessRunner, list]:
    events: list = []
    runner = ProcessRunner(
        onProgress=lambda step, fraction, message: events.append(("progress", step, fraction, message)),
        onLog=lambda line: events.append(("log", line)),
        onFinished=lambda: events.append(("finished",)),
        onError=lambda message: events.append(("error", message)),
        onCancelled=lambda: events.append(("cancelled",)),
        **kwargs,
    )
    return runner, events


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a killed grandchild may linger as one until reaped)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _poll_until(runner: ProcessRunner, predicate, timeout: float) -> bool:
    """Deliver the runner's callbacks until ``predicate()`` holds (the way the widget's QTimer polls)."""

    def delivered() -> bool:
        runner.poll()
        return predicate()

    return _wait_until(delivered, timeout)


def test_child_progress_lines_become_callbacks_in_order_then_finished():
    lines = [format_progress_line("register", 0.0, "start"), format_progress_line("register", 0.5, "half way")]
    code = f"""
        print({lines[0]!r})
        print("a plain log line")
        print({lines[1]!r})
        print({format_progress_line("segment", 1.0)!r})
    """
    runner, events = _recording_runner()
    runner.start(_python(code))
    assert runner.wait(timeout=20)
    assert events == [
        ("progress", "register", 0.0, "start"),
        ("log", "a plain log line"),
        ("progress", "register", 0.5, "half way"),
        ("progress", "segment", 1.0, ""),
        ("finished",),
    ]
    assert not runner.isRunning


def test_failing_child_reports_its_last_error_line_as_the_message():
    code = """
        import sys
        print("[cspineai-progress] 0.100 register loading")
        print("error: T1_sag.nii.gz: the file is missing", file=sys.stderr)
        sys.exit(2)
    """
    runner, events = _recording_runner()
    runner.start(_python(code))
    assert runner.wait(timeout=20)
    assert events[-1] == ("error", "T1_sag.nii.gz: the file is missing (exit status 2)")
    assert ("finished",) not in events


def test_a_traceback_is_summarised_by_its_exception_line():
    runner, events = _recording_runner()
    runner.start(_python("raise ValueError('spacing must be positive')"))
    assert runner.wait(timeout=20)
    assert events[-1] == ("error", "ValueError: spacing must be positive (exit status 1)")


def test_progress_arrives_while_the_child_is_still_running_and_cancel_kills_child_and_grandchild():
    # The grandchild ignores SIGTERM, so only the group-wide SIGKILL after the grace period ends it.
    code = """
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
        print("grandchild", grandchild.pid, flush=True)
        print("[cspineai-progress] 0.200 predict running", flush=True)
        time.sleep(120)
    """
    runner, events = _recording_runner(killGraceSeconds=0.5)
    runner.start(_python(code))
    assert _poll_until(runner, lambda: any(e[0] == "progress" for e in events), timeout=20)
    child_pid = runner.pid
    grandchild_pid = int(next(e[1].split()[1] for e in events if e[0] == "log" and e[1].startswith("grandchild")))
    assert _alive(child_pid) and _alive(grandchild_pid)

    started = time.monotonic()
    runner.cancel()
    assert runner.wait(timeout=10)
    assert events[-1] == ("cancelled",)
    assert _wait_until(lambda: not _alive(grandchild_pid), timeout=5), "the grandchild survived cancel()"
    assert not _alive(child_pid)
    assert time.monotonic() - started < 5


def test_cancel_of_a_quiet_child_is_quick_without_the_grace_period():
    runner, events = _recording_runner(killGraceSeconds=10)
    runner.start(_python("import time\nprint('ready', flush=True)\ntime.sleep(120)"))
    assert _poll_until(runner, lambda: ("log", "ready") in events, timeout=20)
    started = time.monotonic()
    runner.cancel()
    assert runner.wait(timeout=10)
    assert time.monotonic() - started < 2, "a child that obeys SIGTERM must not wait for the grace period"
    assert events[-1] == ("cancelled",)


def test_starting_a_second_job_while_one_runs_is_refused():
    runner, _ = _recording_runner()
    runner.start(_python("import time; time.sleep(30)"))
    try:
        with pytest.raises(RuntimeError, match="already running"):
            runner.start(_python("print('second')"))
    finally:
        runner.cancel()
        runner.wait(timeout=10)


def test_child_gets_unbuffered_output_and_the_given_environment_and_folder(tmp_path):
    code = "import os, sys; print(os.environ['CSPINEAI_TEST'], os.environ['PYTHONUNBUFFERED'], os.getcwd())"
    runner, events = _recording_runner()
    runner.start(_python(code), env={**os.environ, "CSPINEAI_TEST": "yes"}, cwd=tmp_path)
    assert runner.wait(timeout=20)
    assert events[0] == ("log", f"yes 1 {os.path.realpath(tmp_path)}")


def test_failure_summary_prefers_error_lines_and_ignores_progress_lines():
    lines = ["loading", "ValueError: first", "[cspineai-progress] 0.500 step x", "error: second problem", "bye"]
    assert summarizeFailure(lines, 2) == "second problem (exit status 2)"
    assert summarizeFailure(["starting", "Killed"], -9) == "Killed (exit status -9)"
    assert summarizeFailure([], 1) == "the process printed nothing (exit status 1)"


def test_cancel_after_the_child_finished_reports_its_real_outcome_and_still_kills_what_it_left_behind():
    code = """
        import subprocess, sys
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("grandchild", grandchild.pid, flush=True)
    """
    runner, events = _recording_runner(killGraceSeconds=0.5)
    runner.start(_python(code))
    assert _wait_until(lambda: runner._process.poll() is not None, timeout=20)  # exited, nothing delivered yet
    runner.cancel()
    assert runner.wait(timeout=10)
    assert events[-1] == ("finished",)
    grandchild_pid = int(events[0][1].split()[1])
    assert _wait_until(lambda: not _alive(grandchild_pid), timeout=5), "the orphaned grandchild survived cancel()"
