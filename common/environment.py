"""What produced a figure: package versions and the host, recorded beside every result."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from common.cpus import PINNING_AVAILABLE, available_cpus
from common.paths import REPO_ROOT

# The packages whose versions can change a number this project reports.
TRACKED_PACKAGES = (
    "torch",
    "tensorflow",
    "keras",
    "numpy",
    "scikit-learn",
    "torchserve",
    "torch-model-archiver",
    "tensorflow-serving-api",
    "ai-edge-litert",
    "grpcio",
    "locust",
)


def package_versions(names: tuple[str, ...] | list[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed version of each named package; packages not installed are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def source_revision(root: Path = REPO_ROOT) -> str | None:
    """The commit the code was run from, with "+changes" when tracked files differ from it; None outside git."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}+changes" if changes else commit


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, or what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_record() -> dict[str, object]:
    """Hardware and OS facts that hold for every figure measured in this process."""
    affinity = available_cpus() if PINNING_AVAILABLE else None
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpu_affinity": affinity,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
