"""The on-device section: every edge format's size, accuracy change and latency, from results/edge.json.

The table has one column per field of a result row in common/schemas/edge.schema.json, in its order (the
writer validates against it, so a field the writer adds is in the schema and shows up here too); the
fields the report knows get a readable header and format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.schemas import row_fields
from report import fmt, plots
from report.doc import Figure, Paragraph, Row, Section, Table
from report.load import Loaded

NOT_MEASURED_EDGE = "not measured yet: run `make edge` (writes results/edge.json)"
Column = tuple[str, str, Callable[[Any], str]]  # (result field, header, cell text)


def flag_points(edge: dict[str, Any]) -> float:
    """Accuracy points a quantized format may lose before it is flagged: the file's own threshold."""
    return edge["accuracy_flag_points"]


def flag_text(points: float) -> str:
    return f"loses more than {fmt.points(points)} of accuracy"


def _columns(points: float) -> list[Column]:
    known: dict[str, tuple[str, Callable[[Any], str]]] = {
        "bytes": ("bytes", fmt.integer),
        "ratio_to_savedmodel": ("x SavedModel", lambda v: fmt.number(v, 3)),
        "accuracy": ("accuracy", lambda v: fmt.percent(v, 2)),
        "accuracy_change_points": ("change (points)", lambda v: f"{v:+.2f}"),
        "top1_agreement": ("top-1 agree", lambda v: fmt.percent(v, 2)),
        "latency_p50_ms": ("p50 ms", lambda v: fmt.number(v, 3)),
        "latency_p99_ms": ("p99 ms", lambda v: fmt.number(v, 3)),
        "flagged": ("status", lambda v: f"FLAGGED: {flag_text(points)}" if v else "ok"),
    }
    return [(name, *known.get(name, (name.replace("_", " "), fmt.value))) for name in row_fields("edge", "result")]


def edge_table(edge: dict[str, Any]) -> Table:
    columns = _columns(flag_points(edge))
    rows = [Row([text(r[name]) for name, _, text in columns], invalid=r["flagged"]) for r in edge["results"]]
    caption = (f"Edge formats of model {edge.get('model', '?')}; bytes ratio to the SavedModel "
               f"({fmt.integer(edge.get('savedmodel_bytes'))} bytes, {edge.get('savedmodel', '?')}); accuracy "
               f"change against the float32 model ({fmt.percent(edge.get('float32_accuracy'), 2)}); "
               f"latency: {edge.get('latency', 'not described')}.")
    return Table("edge", caption, [header for _, header, _ in columns], rows)


def edge_provenance(loaded: Loaded) -> list[str]:
    edge = loaded.data
    runtimes = edge.get("runtime_installed_bytes") or {}
    installed = ", ".join(f"{name} {size / 1e6:,.1f} MB" if size else f"{name} not installed"
                          for name, size in sorted(runtimes.items()))
    return [f"source: {loaded.source.describe()}",
            f"hardware: {fmt.hardware(edge.get('host') or {})} (the build host, not a phone)",
            f"packages: {fmt.packages(edge.get('packages') or {})}",
            f"runtime installed sizes: {installed or 'not recorded'}",
            f"flagged: a quantized format that {flag_text(flag_points(edge))}"]


def edge_section(edge: Loaded | None) -> Section:
    section = Section("edge", "On the device: edge formats")
    if edge is None:
        return section.add(Paragraph(NOT_MEASURED_EDGE, "note"))
    section.sources.append(edge.source.describe())
    section.provenance = edge_provenance(edge)
    footer = [f"{edge.source.describe()}; model {edge.data.get('model', '?')}",
              f"{fmt.hardware(edge.data.get('host') or {})}; {edge.data.get('latency', '')}"]
    frontier = plots.edge_frontier(edge.data["results"], flag_text(flag_points(edge.data)), footer)
    return section.add(edge_table(edge.data), Figure("edge-frontier", "Edge frontier: bytes against accuracy",
                                                     frontier, footer))
