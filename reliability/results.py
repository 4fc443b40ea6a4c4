"""artifacts/results/reliability.json: one section per command (matrix, chaos, soak), each rewritten on its own.

Every section carries what produced it (servers, versions, machine) so a figure is never read without its
context; a command replaces its own section and leaves the others as they were.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from common.schemas import schema_errors

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
    """Replace one section (stamped with when it was written), keep the rest; written atomically."""
    if name not in SECTIONS:
        raise ValueError(f"unknown reliability section {name!r}")
    document = read_results(path)
    document[name] = {"written": datetime.now(UTC).isoformat(timespec="seconds"), **section}
    errors = schema_errors(document, "reliability")
    if errors:  # a writer bug, not a result: say where, write nothing
        raise ValueError(f"the {name} section does not match common/schemas/reliability.schema.json: {errors[0]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path
