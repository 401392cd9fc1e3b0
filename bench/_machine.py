"""The machine a benchmark ran on, for the header of its table."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line() -> str:
    """`Machine: <lscpu model name>, N CPUs, load a/b/c, Python, torch, Ray, MLflow` (what is installed)."""
    import importlib.metadata as md
    import os
    versions = []
    for name in ("torch", "ray", "mlflow"):
        try:
            versions.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    load = "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, load {load} at start, "
            f"Python {platform.python_version()}, " + ", ".join(versions))
