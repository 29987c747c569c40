"""What a measurement ran on: one line for benchmark output and results files (no user or patient data)."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> str:
    """CPU, visible cores, torch version and threads, GPU when one is used, load average, Python version.

    The load average is part of it because timings on a shared machine are only comparable at similar load.
    """
    import torch

    threads = torch.get_num_threads()
    parts = [cpu_name(), f"{os.cpu_count()} logical CPUs", f"torch {torch.__version__} with {threads} thread(s)"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    if hasattr(os, "getloadavg"):
        parts.append("load average " + "/".join(f"{x:.1f}" for x in os.getloadavg()) + " (1/5/15 min)")
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)
