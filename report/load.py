"""Read every results file the report uses, validate it, and keep where it came from.

A file that cannot be read or does not match its schema is not fatal: it is
listed in the report as unreadable (with the reason) and left out of the numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.paths import ArtifactPaths
from edge.evaluate import EdgeResult
from loadtests.summary import validator
from serving.gpu_bench import Row as GpuRow

SUMMARY_SCHEMA_ID = "summary"  # loadtests/schemas/<name>.schema.json, validated by loadtests.summary
SWEEP_SCHEMA_ID = "sweep"


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
    summaries: list[Loaded] = field(default_factory=list)
    edge: Loaded | None = None
    gpu: Loaded | None = None
    checkpoints: list[Loaded] = field(default_factory=list)
    manifest: Loaded | None = None
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)

    @property
    def has_results(self) -> bool:
        """Training checkpoints alone are not a comparison: `make demo` always leaves one."""
        return bool(self.sweeps or self.summaries or self.edge or self.gpu)


def schema_errors(data: Any, schema_id: str) -> list[str]:
    """Every way `data` breaks the schema, as 'at <json path>: <message>' lines (empty when valid)."""
    errors = sorted(validator(schema_id).iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [f"at {e.json_path}: {e.message}" for e in errors]


def _row_errors(data: Any, key: str, row_type: type) -> list[str]:
    """`data[key]` must list rows holding every field of the writer's row dataclass."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        return [f"no '{key}' list"]
    names = [f.name for f in fields(row_type)]
    for index, row in enumerate(data[key]):
        missing = [name for name in names if not isinstance(row, dict) or name not in row]
        if missing:
            return [f"{key}[{index}] lacks {', '.join(missing)}"]
    return []


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _edge_errors(data: Any) -> list[str]:
    """edge.json has no schema file: its rows are edge.evaluate.EdgeResult records."""
    errors = _row_errors(data, "results", EdgeResult)
    if not errors and not _number(data.get("accuracy_flag_points", 0.0)):
        errors = [f"accuracy_flag_points is {data['accuracy_flag_points']!r}, not a number"]
    return errors


def _gpu_errors(data: Any) -> list[str]:
    """gpu-bench.json has no schema file: its rows are serving.gpu_bench.Row records."""
    errors = _row_errors(data, "rows", GpuRow)
    if errors:
        return errors
    agreement, skipped = data.get("top1_agreement", {}), data.get("skipped", [])
    if not isinstance(agreement, dict) or not all(isinstance(by_dtype, dict) for by_dtype in agreement.values()):
        return ["top1_agreement is not a {framework: {dtype: fraction}} object"]
    if not isinstance(skipped, list) or not all(isinstance(item, dict) for item in skipped):
        return ["skipped is not a list of objects"]
    return []


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


def _checkpoint_errors(data: Any) -> list[str]:
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
        results.sweeps = _load_all(list(results_dir.rglob("sweep.json")), root, unreadable,
                                   lambda d: schema_errors(d, SWEEP_SCHEMA_ID))
        results.summaries = _load_all(list(results_dir.rglob("summary.json")), root, unreadable,
                                      lambda d: schema_errors(d, SUMMARY_SCHEMA_ID))
        results.edge = _optional(results_dir / "edge.json", root, unreadable, _edge_errors)
        results.gpu = _optional(results_dir / "gpu-bench.json", root, unreadable, _gpu_errors)
    checkpoint_files = list((root / "checkpoints").glob("*/checkpoint.json"))
    results.checkpoints = _load_all(checkpoint_files, root, unreadable, _checkpoint_errors)
    results.manifest = _optional(paths.manifest, root, unreadable, lambda d: [])
    return results
