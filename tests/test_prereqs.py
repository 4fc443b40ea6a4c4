"""scripts/prereqs.sh, which `make setup` runs first: it finds what is missing and names it in one line.

Run with PREREQS=check, so it never installs anything here; a PATH built for each test hides or
replaces one prerequisite at a time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "prereqs.sh"
# What the script itself runs, besides the prerequisites.
TOOLS = ("bash", "sed", "head", "cut", "id", "uname", "apt-cache", "env")


def _bin_with(tmp_path: Path, *commands: str, java_says: str = 'openjdk version "17.0.15" 2025-04-15') -> Path:
    """A directory for PATH holding only these commands and a fake `java` printing `java_says` (no Java needed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in (*TOOLS, *commands):
        found = shutil.which(command)
        assert found, f"{command} is needed to run this test (make prereqs installs it)"
        (bin_dir / command).symlink_to(found)
    if java_says:
        (bin_dir / "java").write_text(f"#!/bin/sh\necho '{java_says}' >&2\n")
        (bin_dir / "java").chmod(0o755)
    return bin_dir


def _run(bin_dir: Path, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = {"PATH": str(bin_dir), "PREREQS": "check", "PYTHON": python, "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_everything_present_is_one_line_and_success():
    done = subprocess.run(["bash", str(SCRIPT)], env={**os.environ, "PREREQS": "check", "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.strip().endswith("all present")
    assert "Python 3.11." in done.stdout and "Java " in done.stdout


@pytest.mark.parametrize(("hidden", "named", "package"), [
    ("chromium", "chromium", "chromium"),
    ("docker-compose", "a Compose implementation", "docker-compose"),
    ("openssl", "openssl", "openssl"),
])
def test_a_missing_tool_stops_with_one_line_naming_its_package(tmp_path, hidden, named, package):
    present = [c for c in ("chromium", "docker-compose", "openssl") if c != hidden]
    done = _run(_bin_with(tmp_path, *present))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    line = done.stderr.strip()
    assert line.startswith(f"prereqs: missing: {named};") and "apt-get install" in line
    assert line.split("apt-get install", 1)[1].split().count(package) == 1


def test_an_old_java_is_named_with_its_version(tmp_path):
    done = _run(_bin_with(tmp_path, "chromium", "docker-compose", "openssl",
                          java_says='openjdk version "11.0.22" 2024-01-16'))
    assert done.returncode == 2
    assert "Java 17 or newer (found 11)" in done.stderr and "openjdk-" in done.stderr


def test_python_other_than_3_11_is_refused(tmp_path):
    done = _run(_bin_with(tmp_path, "chromium", "docker-compose", "openssl"), python="python3.99")
    assert done.returncode == 2 and "missing: Python 3.11 (python3.99 not found)" in done.stderr
