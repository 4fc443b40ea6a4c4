"""The GPU section: results/gpu-bench.json shown as a table of whatever rows it holds.

Its writer (serving/gpu_bench.py) is young, so the rows are read generically:
the usual columns first (framework, dtype, batch, images/s), any others after.
"""

from __future__ import annotations

from typing import Any

from report.doc import Paragraph, Row, Section, Table
from report.load import Loaded

NOT_MEASURED_GPU = "not measured yet: no results/gpu-bench.json (run `make gpu-bench` on a machine with a GPU)"
PREFERRED = ("framework", "runtime", "device", "dtype", "batch", "batch_size", "images_per_s", "latency_ms")
ROW_KEYS = ("results", "rows", "runs", "measurements")


def _rows(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, list):
        candidates = data
    else:
        candidates = next((data[k] for k in ROW_KEYS if isinstance(data.get(k), list)), [])
    return [row for row in candidates if isinstance(row, dict)]


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={_cell(value[key])}" for key in sorted(value)) or "none"
    return _cell(value)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def gpu_section(gpu: Loaded | None) -> Section:
    section = Section("gpu", "GPU")
    if gpu is None:
        return section.add(Paragraph(NOT_MEASURED_GPU, "note"))
    section.sources.append(gpu.source.describe())
    if isinstance(gpu.data, dict):
        section.provenance = [f"{key}: {_describe(value)}" for key, value in sorted(gpu.data.items())
                              if _scalar(value) or (isinstance(value, dict) and all(map(_scalar, value.values())))]
        skipped = [s for s in gpu.data.get("skipped", []) if isinstance(s, dict)]
        section.add(*(Paragraph("skipped: " + ", ".join(f"{k} {_cell(v)}" for k, v in sorted(s.items())), "note")
                      for s in skipped))
    rows = _rows(gpu.data)
    if not rows:
        return section.add(Paragraph(f"{gpu.source.path} holds no rows to show", "note"))
    keys = {key for row in rows for key, value in row.items() if _scalar(value)}
    columns = [k for k in PREFERRED if k in keys] + sorted(keys - set(PREFERRED))
    table_rows = [Row([_cell(row.get(c)) for c in columns], invalid=row.get("valid") is False) for row in rows]
    return section.add(Table("gpu", "GPU benchmark rows as recorded.", columns, table_rows))
