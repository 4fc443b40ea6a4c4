"""The on-device section: every edge format's size, accuracy change and latency, from results/edge.json."""

from __future__ import annotations

from typing import Any

from report import fmt, plots
from report.doc import Figure, Paragraph, Row, Section, Table
from report.load import Loaded

NOT_MEASURED_EDGE = "not measured yet: run `make edge` (writes results/edge.json)"
EDGE_COLUMNS = ["format", "runtime", "bytes", "x SavedModel", "accuracy", "change (points)", "top-1 agree",
                "p50 ms", "p99 ms", "status"]


def edge_rows(edge: dict[str, Any]) -> list[dict[str, Any]]:
    return edge["results"]


def edge_table(edge: dict[str, Any]) -> Table:
    rows = [Row([r["format"], r["runtime"], fmt.integer(r["bytes"]), fmt.number(r["ratio_to_savedmodel"], 3),
                 fmt.percent(r["accuracy"], 2), f"{r['accuracy_change_points']:+.2f}",
                 fmt.percent(r["top1_agreement"], 2), fmt.number(r["latency_p50_ms"], 3),
                 fmt.number(r["latency_p99_ms"], 3), "FLAGGED: loses > 1 point" if r["flagged"] else "ok"],
                invalid=r["flagged"]) for r in edge_rows(edge)]
    caption = (f"Edge formats of model {edge.get('model', '?')}; bytes ratio to the SavedModel "
               f"({fmt.integer(edge.get('savedmodel_bytes'))} bytes, {edge.get('savedmodel', '?')}); accuracy "
               f"change against the float32 model ({fmt.percent(edge.get('float32_accuracy'), 2)}); "
               f"latency: {edge.get('latency', 'not described')}.")
    return Table("edge", caption, EDGE_COLUMNS, rows)


def edge_provenance(loaded: Loaded) -> list[str]:
    edge = loaded.data
    runtimes = edge.get("runtime_installed_bytes") or {}
    installed = ", ".join(f"{name} {size / 1e6:,.1f} MB" if size else f"{name} not installed"
                          for name, size in sorted(runtimes.items()))
    return [f"source: {loaded.source.describe()}",
            f"hardware: {fmt.hardware(edge.get('host') or {})} (the build host, not a phone)",
            f"packages: {fmt.packages(edge.get('packages') or {})}",
            f"runtime installed sizes: {installed or 'not recorded'}"]


def edge_section(edge: Loaded | None) -> Section:
    section = Section("edge", "On the device: edge formats")
    if edge is None:
        return section.add(Paragraph(NOT_MEASURED_EDGE, "note"))
    section.sources.append(edge.source.describe())
    section.provenance = edge_provenance(edge)
    footer = [f"{edge.source.describe()}; model {edge.data.get('model', '?')}",
              f"{fmt.hardware(edge.data.get('host') or {})}; {edge.data.get('latency', '')}"]
    return section.add(edge_table(edge.data), Figure("edge-frontier", "Edge frontier: bytes against accuracy",
                                                     plots.edge_frontier(edge_rows(edge.data), footer), footer))
