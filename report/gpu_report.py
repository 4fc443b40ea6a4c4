"""The GPU section: results/gpu-bench.json (serving/gpu_bench.py) as provenance, a table and top-1 agreement.

The table has one column per field of a row in common/schemas/gpu-bench.schema.json, in its order (the
writer validates against it), so a field the writer adds shows up.
"""

from __future__ import annotations

from typing import Any

from common.schemas import row_fields
from report import fmt
from report.doc import Paragraph, Row, Section, Table
from report.load import Loaded

NOT_MEASURED_GPU = "not measured yet: no results/gpu-bench.json (run `make gpu-bench` on a machine with a GPU)"
COLUMNS = row_fields("gpu-bench", "row")


def _describe(record: dict[str, Any]) -> str:
    return ", ".join(f"{key}={fmt.value(record[key])}" for key in sorted(record)) or "not recorded"


def gpu_provenance(gpu: Loaded) -> list[str]:
    """The GPU, the host around it, the package versions, the model and how it was timed."""
    data = gpu.data
    shape = "x".join(map(str, data.get("input_shape") or [])) or "?"
    briefly = ", trained briefly" if data.get("trained_briefly") else ""
    return [f"source: {gpu.source.describe()}",
            f"GPU: {_describe(data.get('gpu') or {})}",
            f"hardware: {fmt.hardware(data.get('host') or {})}",
            f"packages: {fmt.packages(data.get('versions') or {})}",
            f"frameworks on the GPU: {', '.join(data.get('frameworks') or []) or 'not recorded'}",
            f"model: {data.get('model', '?')} (profile {data.get('profile', '?')}, input {shape}, "
            f"{fmt.integer(data.get('multiply_accumulates'))} multiply-accumulates{briefly})",
            f"method: {_describe(data.get('method') or {})}"]


def agreement_table(agreement: dict[str, dict[str, float]]) -> Table:
    rows = [Row([framework, dtype, fmt.percent(fraction, 2)])
            for framework, by_dtype in agreement.items() for dtype, fraction in by_dtype.items()]
    return Table("gpu-agreement", "Top-1 agreement of each dtype with the same framework's float32 predictions.",
                 ["framework", "dtype", "top-1 agreement with float32"], rows)


def gpu_section(gpu: Loaded | None) -> Section:
    section = Section("gpu", "GPU")
    if gpu is None:
        return section.add(Paragraph(NOT_MEASURED_GPU, "note"))
    section.sources.append(gpu.source.describe())
    section.provenance = gpu_provenance(gpu)
    section.add(*(Paragraph(f"skipped {s.get('framework')} {s.get('dtype')}: {s.get('reason')}", "note")
                  for s in gpu.data.get("skipped", [])))
    rows = gpu.data["rows"]
    if not rows:
        return section.add(Paragraph(f"{gpu.source.path} holds no rows to show", "note"))
    section.add(Table("gpu", "In-process GPU throughput and latency per framework, dtype and batch size, "
                      "host copies included.", COLUMNS,
                      [Row([fmt.value(row[c]) for c in COLUMNS]) for row in rows]))
    agreement = gpu.data.get("top1_agreement") or {}
    return section.add(agreement_table(agreement)) if agreement else section
