"""What a benchmark result was measured with: versions, commit, machine and date."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["environment"]

_PACKAGES = ("monai-danil", "torch", "monai", "pytorch-ignite", "numpy", "scikit-learn")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_state() -> dict[str, Any]:
    """The code being measured: ``{"git_sha", "git_dirty", "started"}``, read when called.

    A benchmark reads it once when it starts: commits made while it runs (its code is already
    imported) must not be recorded as what it measured.
    """
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_sha": _git("rev-parse", "HEAD") or None,
        "git_dirty": None if status is None else bool(status),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def environment(device: str | torch.device | None = None, code: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions, the git commit (and whether the tree had uncommitted changes), machine, date.

    Args:
        device: the device the measurement ran on; a CUDA device adds the GPU's name.
        code: :func:`code_state` as read when the measurement started. Default: read now.

    Returns:
        ``{"versions": {...}, "git_sha": str | None, "git_dirty": bool | None, "started": ISO 8601 UTC,
        "machine": {...}, "date": ISO 8601 UTC}`` (``date``: now, when the result is written).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_cores": cpus,
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else None,
    }
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
    try:
        machine["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return {
        "versions": {"python": sys.version.split()[0], **{p: _version(p) for p in _PACKAGES}},
        **(code if code is not None else code_state()),
        "machine": machine,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
