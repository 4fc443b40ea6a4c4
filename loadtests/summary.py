"""summary.json: percentiles, schema validation, and the side-by-side console table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common import schemas

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99.9": 99.9}


def percentiles(latencies_ms: list[float]) -> dict[str, float | None]:
    """p50 .. p99.9, max and mean in milliseconds; all None when nothing completed."""
    if not latencies_ms:
        return {**dict.fromkeys(PERCENTILES), "max": None, "mean": None}
    values = np.asarray(latencies_ms, dtype=np.float64)
    result = {name: float(np.percentile(values, q)) for name, q in PERCENTILES.items()}
    return {**result, "max": float(values.max()), "mean": float(values.mean())}


def validate(document: dict, name: str = "summary") -> None:
    """Raise jsonschema.ValidationError if `document` breaks common/schemas/<name>.schema.json."""
    schemas.validate(document, name)


def write(path: Path, document: dict, name: str = "summary") -> Path:
    """Validate, then write (a document that breaks its schema is a bug here, not a result)."""
    validate(document, name)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(document: dict) -> str:
    """The targets side by side, one row each, with validity spelled out."""
    header = (f"{'target':<11}{'server':<20}{'req/s':>9}{'img/s':>9}{'p50 ms':>9}{'p90':>8}{'p99':>8}"
              f"{'p99.9':>8}{'max':>8}{'fails':>7}{'gen CPU':>9}{'x ceiling':>10}  valid")
    lines = [header]
    for name, result in document["targets"].items():
        latency, ceiling = result["latency_ms"], result["ceiling"]
        lines.append(
            f"{name:<11}{result['server']['binary'][:19]:<20}{_fmt(result['throughput_rps']):>9}"
            f"{_fmt(result['images_per_s']):>9}{_fmt(latency['p50'], 2):>9}{_fmt(latency['p90'], 2):>8}"
            f"{_fmt(latency['p99'], 2):>8}{_fmt(latency['p99.9'], 2):>8}{_fmt(latency['max'], 1):>8}"
            f"{result['failures']:>7}{_fmt(result['generator']['cpu_percent'], 0) + '%':>9}"
            f"{_fmt(ceiling['fraction'], 2) if ceiling else '-':>10}  {'yes' if result['valid'] else 'NO'}")
    for name, result in document["targets"].items():
        for reason in result["invalid_reasons"]:
            lines.append(f"  INVALID {name}: {reason}")
    return "\n".join(lines)
