"""Read every results file the report uses, validate it, and keep where it came from.

A file that cannot be read or does not match its schema is not fatal: it is
listed in the report as unreadable (with the reason) and left out of the numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.paths import ArtifactPaths
from common.schemas import schema_errors


@dataclass(frozen=True)
class Source:
    """One results file: its path relative to the artifacts root, run id, date and content hash."""

    path: str
    run_id: str | None
    created: str | None
    sha256: str
    modified: str  # the file's own date, for files (edge.json, checkpoints) that record none inside

    def describe(self) -> str:
        parts = [self.path]
        if self.run_id:
            parts.append(f"run {self.run_id}")
        parts.append(f"created {self.created}" if self.created else f"file dated {self.modified}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Loaded:
    """A parsed results file and its source."""

    data: dict[str, Any]
    source: Source


@dataclass
class Results:
    """Everything found under one artifacts root, newest first within each kind."""

    root: Path
    sweeps: list[Loaded] = field(default_factory=list)
    tunes: list[Loaded] = field(default_factory=list)  # make tune: the knob grids that chose a sweep's knobs
    summaries: list[Loaded] = field(default_factory=list)
    edge: Loaded | None = None
    gpu: Loaded | None = None
    reliability: Loaded | None = None
    checkpoints: list[Loaded] = field(default_factory=list)
    manifest: Loaded | None = None
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)

    @property
    def has_results(self) -> bool:
        """Training checkpoints alone are not a comparison: `make demo` always leaves one."""
        return bool(self.sweeps or self.summaries or self.edge or self.gpu or self.reliability)


def _read_json(path: Path, root: Path, unreadable: list[tuple[str, str]]) -> tuple[Any, Source] | None:
    relative = path.relative_to(root).as_posix()
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        unreadable.append((relative, f"not JSON: {exc}"))
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    # gpu-bench.json names its date "date"; the load-test files "created".
    created = (data.get("created") or data.get("date")) if isinstance(data, dict) else None
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return data, Source(relative, run_id, created, hashlib.sha256(raw).hexdigest(), modified)


def _load_checked(path: Path, root: Path, unreadable: list[tuple[str, str]], check) -> Loaded | None:
    read = _read_json(path, root, unreadable)
    if read is None:
        return None
    data, source = read
    errors = check(data)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        unreadable.append((source.path, f"does not match its schema: {errors[0]}{more}"))
        return None
    return Loaded(data, source)


def _newest_first(items: list[Loaded]) -> list[Loaded]:
    return sorted(items, key=lambda item: (item.source.created or "", item.source.path), reverse=True)


def _load_all(paths: list[Path], root: Path, unreadable: list[tuple[str, str]], check) -> list[Loaded]:
    loaded = (_load_checked(path, root, unreadable, check) for path in sorted(paths))
    return _newest_first([item for item in loaded if item is not None])


def _optional(path: Path, root: Path, unreadable: list[tuple[str, str]], check) -> Loaded | None:
    return _load_checked(path, root, unreadable, check) if path.is_file() else None


def _schema(name: str) -> Callable[[Any], list[str]]:
    """The check for one kind of results file: common/schemas/<name>.schema.json."""
    return lambda data: schema_errors(data, name)


def _checkpoint_errors(data: Any) -> list[str]:
    """checkpoint.json is training's own record, not a results file: only what the report reads is checked."""
    required = ("model_name", "profile", "trainer", "history", "test_accuracy")
    missing = [key for key in required if not isinstance(data, dict) or key not in data]
    return [f"lacks {', '.join(missing)}"] if missing else []


def load_results(root: Path) -> Results:
    """Find and validate every results file under the artifacts root `root`."""
    paths = ArtifactPaths(root)
    results = Results(root)
    unreadable = results.unreadable
    results_dir = paths.results_dir
    if results_dir.is_dir():
        results.sweeps = _load_all(list(results_dir.rglob("sweep.json")), root, unreadable, _schema("sweep"))
        results.tunes = _load_all(list(results_dir.rglob("tune.json")), root, unreadable, _schema("tune"))
        results.summaries = _load_all(list(results_dir.rglob("summary.json")), root, unreadable, _schema("summary"))
        results.edge = _optional(results_dir / "edge.json", root, unreadable, _schema("edge"))
        results.gpu = _optional(results_dir / "gpu-bench.json", root, unreadable, _schema("gpu-bench"))
        results.reliability = _optional(results_dir / "reliability.json", root, unreadable, _schema("reliability"))
    checkpoint_files = list((root / "checkpoints").glob("*/checkpoint.json"))
    results.checkpoints = _load_all(checkpoint_files, root, unreadable, _checkpoint_errors)
    results.manifest = _optional(paths.manifest, root, unreadable, lambda d: [])
    return results
