"""Install requirements.lock into the running interpreter (make setup runs it with .venv's python).

Torch comes first, on its own, because its source decides gigabytes: PyPI's
Linux x86-64 wheel of torch is the CUDA build, which pulls several GB of
nvidia-* wheels; the CPU build is about 190 MB. So on Linux x86-64 this asks
pip which file the machine's own index would take; if that is not a CPU build
(`+cpu`) it installs torch from PyTorch's CPU index instead, and only falls
back to the CUDA build, saying so, when that index cannot be reached. Then the
whole lock, which the installed torch already satisfies, then the project itself (editable, for its
console scripts). pip prints what it
collects and downloads as it goes (no --quiet: this step takes minutes).

  python scripts/install_lock.py requirements.lock
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import urllib.request
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args]
    print(f"setup: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True)


def locked_torch(lock: Path) -> str:
    """The lock's torch pin, e.g. 'torch==2.13.0'."""
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("torch=="):
            return line.strip()
    raise SystemExit(f"setup: {lock} pins no torch== version")


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def file_pip_would_take(requirement: str, *index_args: str) -> tuple[str, str]:
    """(version, url) of the file pip would install for `requirement`, resolved without installing it."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                        "--quiet", "--report", str(report), *index_args, requirement],
                       check=True, stderr=subprocess.DEVNULL)
        chosen = json.loads(report.read_text())["install"][0]
    return chosen["metadata"]["version"], chosen["download_info"]["url"]


def describe(url: str) -> str:
    """The file name, and its size where it lies on this disk."""
    parsed = urlparse(url)
    name = unquote(Path(parsed.path).name)
    if parsed.scheme == "file":
        return f"{name}, {Path(unquote(parsed.path)).stat().st_size / 1e6:.1f} MB, on this disk"
    return name


def cpu_index_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{CPU_INDEX}/torch/", timeout=10):
            return True
    except OSError:
        return False


def install_torch(requirement: str) -> None:
    """The lock's torch, as a CPU build wherever one can be had."""
    pinned = requirement.split("==", 1)[1]
    have = installed_version("torch")
    if have is not None and have.split("+")[0] == pinned:
        print(f"setup: torch {have} already installed", flush=True)
        return
    if not (sys.platform == "linux" and platform.machine() == "x86_64"):
        return  # PyPI's torch elsewhere (Linux ARM, macOS, Windows) is a CPU build: the lock installs it
    version, url = file_pip_would_take(requirement)
    if "+cpu" in version:
        print(f"setup: torch: this machine's index offers the CPU build ({describe(url)})", flush=True)
        pip("install", "--no-deps", requirement)
    elif cpu_index_reachable():
        print(f"setup: torch: this machine's index offers {version} ({describe(url)}), a CUDA build with several "
              f"GB of nvidia-* wheels; taking the CPU build (about 190 MB) from {CPU_INDEX}", flush=True)
        pip("install", "--no-deps", "--index-url", CPU_INDEX, f"torch=={pinned}+cpu")
    else:
        print(f"setup: WARNING: torch: this machine's index offers only {version} ({describe(url)}), a CUDA "
              f"build with several GB of nvidia-* wheels, and {CPU_INDEX} cannot be reached; installing it",
              flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("usage: python scripts/install_lock.py requirements.lock", file=sys.stderr)
        return 2
    lock = Path(argv[0])
    pip("install", "--upgrade", "pip")
    install_torch(locked_torch(lock))
    pip("install", "--progress-bar", "on", "-r", str(lock))
    # The project itself, editable and without dependencies (the lock brought them): its console scripts
    # (tvt-train, tf-serving-dropin, ...). No build isolation: setuptools comes with the lock's set.
    pip("install", "--no-deps", "--no-build-isolation", "--editable", str(lock.resolve().parent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
