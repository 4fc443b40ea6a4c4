"""artifacts/manifest.json: one record per artifact, shared by every stage.

Each stage adds or replaces its own entries (keyed by path) and leaves the
others alone, so training, export and edge can run separately.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.fsutil import sha256_of

SCHEMA_VERSION = 1


def artifact_entry(path: Path, root: Path, fmt: str, tools: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Describe one artifact file: where it is, what it is, its size and hash."""
    return {
        "path": str(path.relative_to(root)),
        "format": fmt,
        "bytes": path.stat().st_size,
        "sha256": sha256_of(path),
        "tools": tools,
        **extra,
    }


def directory_entry(path: Path, root: Path, fmt: str, tools: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Describe a directory artifact (a SavedModel) with a hash of every file in it."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {
        "path": str(path.relative_to(root)),
        "format": fmt,
        "bytes": sum(p.stat().st_size for p in files),
        "files": [
            {"path": str(p.relative_to(root)), "bytes": p.stat().st_size, "sha256": sha256_of(p)}
            for p in files
        ],
        "tools": tools,
        **extra,
    }


def load_manifest(path: Path) -> dict[str, Any]:
    """The manifest on disk, or an empty one."""
    if not path.exists():
        return {"schema_version": SCHEMA_VERSION, "models": {}, "artifacts": []}
    return json.loads(path.read_text(encoding="utf-8"))


def update_manifest(path: Path, model: dict[str, Any] | None, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge a model record and artifact entries into the manifest, atomically."""
    manifest = load_manifest(path)
    if model is not None:
        manifest["models"][model["name"]] = model
    replaced = {entry["path"] for entry in entries}
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] not in replaced] + entries
    manifest["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as tmp:
        json.dump(manifest, tmp, indent=2, sort_keys=False)
        tmp.write("\n")
    os.replace(tmp.name, path)
    return manifest
