"""summary.json: percentiles, schema validation, and the side-by-side console table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common import schemas
from common.spread import spread_text

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99.9": 99.9}
# A percentile is reported only when at least this many requests lie beyond it: p99 needs 1,000
# requests, p99.9 10,000. Fewer, and one slow request moves it by the whole tail.
SAMPLES_BEYOND = 10


def samples_needed(q: float) -> int:
    """How many requests percentile q (0-100) must rest on to be reported."""
    return round(SAMPLES_BEYOND * 100 / (100 - q))


def percentiles(latencies_ms: list[float]) -> dict[str, float | None]:
    """p50 .. p99.9, max and mean in milliseconds, and how many requests they rest on.

    A percentile with too few requests beyond it (samples_needed) is None: not reported.
    """
    if not latencies_ms:
        return {**dict.fromkeys(PERCENTILES), "max": None, "mean": None, "samples": 0}
    values = np.asarray(latencies_ms, dtype=np.float64)
    result = {name: float(np.percentile(values, q)) if len(values) >= samples_needed(q) else None
              for name, q in PERCENTILES.items()}
    return {**result, "max": float(values.max()), "mean": float(values.mean()), "samples": len(values)}


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
    """The targets side by side, one row each: medians with [min-max] over the repeats, validity spelled out."""
    header = (f"{'target':<11}{'server':<18}{'req/s':>24}{'p50 ms':>22}{'p99 ms':>22}{'fails':>7}{'gen CPU':>9}"
              f"{'x ceiling':>10}  valid")
    lines = [f"median [min-max] over {document['repeats']['count']} repeat(s)", header]
    for name, result in document["targets"].items():
        spread, ceiling = result["spread"], result["ceiling"]
        lines.append(
            f"{name:<11}{result['server']['binary'][:17]:<18}{spread_text(spread['throughput_rps'], 1):>24}"
            f"{spread_text(spread['p50_ms'], 2):>22}{spread_text(spread['p99_ms'], 2):>22}"
            f"{result['failures']:>7}{_fmt(result['generator']['cpu_percent'], 0) + '%':>9}"
            f"{_fmt(ceiling['fraction'], 2) if ceiling else '-':>10}  {'yes' if result['valid'] else 'NO'}")
    for name, result in document["targets"].items():
        for reason in result["invalid_reasons"]:
            lines.append(f"  INVALID {name}: {reason}")
    return "\n".join(lines)
