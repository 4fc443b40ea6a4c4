"""The layer rule (pyproject.toml's [tool.importlinter], docs/architecture.md), checked by import-linter.

The repository keeps every contract; a copy of it with one deliberately wrong import breaks the contract
that import is against, so the check can fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.paths import REPO_ROOT

PACKAGES = ("common", "model", "training", "export", "serving", "edge", "loadtests", "reliability", "report")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_the_repository_keeps_every_contract():
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(("module", "wrong_import", "broken"), [
    ("common/paths.py", "import report.fmt", "Stages import only the layers before them"),
    ("model/spec.py", "import training.recipe", "Stages import only the layers before them"),
    ("serving/tf/dropin/source.py", "import common.paths", "The TF Serving drop-in is a server of its own"),
    ("report/load.py", "import edge.evaluate", "The report reads results files, not the stages that wrote them"),
])
def test_a_wrong_import_breaks_its_contract(tmp_path, module, wrong_import, broken):
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / module, "a", encoding="utf-8") as source:
        source.write(f"\n{wrong_import}  # against the layers, on purpose\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    assert f"{broken} BROKEN" in done.stdout and "Contracts: 2 kept, 1 broken." in done.stdout
