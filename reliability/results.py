"""artifacts/results/reliability.json: one section per command (matrix, chaos, soak), each rewritten on its own.

Every section carries what produced it (servers, versions, machine) so a figure is never read without its
context; a command replaces its own section and leaves the others as they were.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from common.fsutil import write_results_file

SCHEMA_VERSION = 1
SECTIONS = ("matrix", "chaos", "soak")


def results_file(results_dir: Path) -> Path:
    return results_dir / "reliability.json"


def read_results(path: Path) -> dict:
    """The document at `path`, or an empty one; a file of another schema version is started afresh."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"schema_version": SCHEMA_VERSION}
    if not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION:
        return {"schema_version": SCHEMA_VERSION}
    return document


def write_section(path: Path, name: str, section: dict) -> Path:
    """Replace one section (stamped with when it was written), keep the rest; validated before anything is written."""
    if name not in SECTIONS:
        raise ValueError(f"unknown reliability section {name!r}")
    document = read_results(path)
    document[name] = {"written": datetime.now(UTC).isoformat(timespec="seconds"), **section}
    return write_results_file(path.parent, path.name, document, schema="reliability")
