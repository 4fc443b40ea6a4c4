"""The report's figures: matplotlib (Agg) PNGs with fixed sizes, each carrying its provenance in a footer.

Invalid points are drawn, never dropped: hollow red-edged markers (or hatched
bars) with "INVALID" next to them, so a reader sees what was measured and why
it does not count.
"""

from __future__ import annotations

import io
import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from report.verdict import TargetRow  # noqa: E402

WIDTH_IN, HEIGHT_IN, DPI = 9.0, 5.6, 100  # 900 x 560 pixels
COLORS = {"tf-rest": "#e8710a", "tf-grpc": "#a83c00", "torch-rest": "#1f77b4", "torch-grpc": "#6a3d9a"}
INVALID_COLOR = "#d62728"
FOOTER_CHARS = 150


def _figure(footer: list[str]) -> tuple[Figure, Any]:
    lines = [wrapped for line in footer for wrapped in textwrap.wrap(line, FOOTER_CHARS)]
    fig = plt.figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    footer_height = 0.03 + 0.028 * len(lines)  # room for the provenance footer, in figure fractions
    ax = fig.add_axes((0.09, footer_height + 0.08, 0.62, 0.84 - footer_height))
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, color="#444444", va="bottom", family="monospace")
    return fig, ax


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})  # no version stamp: same bytes
    plt.close(fig)
    return buffer.getvalue()


def _values(values: list[float | None]) -> list[float]:
    """Percentiles may be null (too few requests); a gap in the line says so better than a zero."""
    return [float("nan") if v is None else v for v in values]


def _legend(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)


def _mark_invalid(ax, xs: list[float], ys: list[float]) -> None:
    if not xs:
        return
    ax.scatter(xs, ys, s=90, facecolors="none", edgecolors=INVALID_COLOR, linewidths=1.8, zorder=5,
               label="INVALID step")
    for x, y in zip(xs, ys, strict=True):
        ax.annotate("INVALID", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=7, color=INVALID_COLOR)


def latency_vs_load(targets: dict[str, dict[str, Any]], invalid_targets: set[str], slo_ms: float,
                    common: float | None, footer: list[str]) -> bytes:
    """p50 (dashed) and p99 (solid) against offered load, all targets on one log-scale chart."""
    fig, ax = _figure(footer)
    bad_x: list[float] = []
    bad_y: list[float] = []
    for target, entry in targets.items():
        steps = sorted(entry["steps"], key=lambda s: s["offered_rps"])
        offered = [s["offered_rps"] for s in steps]
        suffix = " (INVALID target)" if target in invalid_targets else ""
        style = {"color": COLORS.get(target, "black"), "marker": "o", "markersize": 4}
        ax.plot(offered, _values([s["latency_ms"]["p99"] for s in steps]), linestyle=":" if suffix else "-",
                label=f"{target} p99{suffix}", **style)
        ax.plot(offered, _values([s["latency_ms"]["p50"] for s in steps]), linestyle="--", alpha=0.7,
                label=f"{target} p50{suffix}", **style)
        bad = [s for s in steps if not s["valid"]]
        bad_x += [s["offered_rps"] for s in bad]
        bad_y += _values([s["latency_ms"]["p99"] for s in bad])
    _mark_invalid(ax, bad_x, bad_y)
    ax.axhline(slo_ms, color="black", linewidth=1, label=f"SLO: p99 <= {slo_ms:g} ms")
    if common is not None:
        ax.axvline(common, color="grey", linewidth=1, linestyle="-.", label=f"common load {common:,.0f} req/s")
    ax.set_yscale("log")
    ax.set(xlabel="offered load (requests/s, open loop)", ylabel="latency (ms, log scale)",
           title="Latency percentiles against offered load")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _png(fig)


def throughput_vs_batch(targets: dict[str, dict[str, Any]], footer: list[str]) -> bytes:
    """Images per second against the request batch size, one line per target."""
    fig, ax = _figure(footer)
    bad_x: list[float] = []
    bad_y: list[float] = []
    for target, entry in targets.items():
        rows = sorted(entry["batch_sizes"], key=lambda r: r["batch_size"])
        ax.plot([r["batch_size"] for r in rows], _values([r["images_per_s"] for r in rows]), marker="o",
                color=COLORS.get(target, "black"), label=target)
        bad_x += [r["batch_size"] for r in rows if not r["valid"]]
        bad_y += _values([r["images_per_s"] for r in rows if not r["valid"]])
    _mark_invalid(ax, bad_x, bad_y)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="images per request (batch size, log2)", ylabel="images / s",
           title="Throughput against batch size")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _png(fig)


def edge_frontier(rows: list[dict[str, Any]], flagged_means: str, footer: list[str]) -> bytes:
    """Bytes against accuracy; marker area grows with p50 latency; flagged formats edged in red.

    `flagged_means` says what a flag stands for, from the file's own threshold ("loses more than 1 point ...").

    Formats often share a size and an accuracy, so each gets its own colour and a legend entry
    instead of a text label that would sit on top of its neighbour's.
    """
    fig, ax = _figure(footer)
    slowest = max(r["latency_p50_ms"] for r in rows) or 1.0
    palette = plt.get_cmap("tab10")
    for index, row in enumerate(rows):
        flagged = row["flagged"]
        ax.scatter(row["bytes"], row["accuracy"] * 100, s=40 + 900 * row["latency_p50_ms"] / slowest,
                   color=palette(index % 10), alpha=0.6, edgecolors=INVALID_COLOR if flagged else "black",
                   linewidths=2.5 if flagged else 0.5,
                   label=f"{row['format']}: p50 {row['latency_p50_ms']:.3f} ms" + (" FLAGGED" if flagged else ""))
    ax.set_xscale("log")
    ax.set(xlabel="file size (bytes, log scale)", ylabel="test accuracy (%)",
           title="Edge frontier: size against accuracy (marker area = p50 latency)")
    ax.margins(x=0.1, y=0.15)
    ax.grid(True, which="both", alpha=0.3)
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False, markerscale=0.5,
                       title=textwrap.fill(f"thick red edge = FLAGGED ({flagged_means})", 40),
                       title_fontsize=7)
    for handle in legend.legend_handles:
        handle.set_sizes([40])
    return _png(fig)


def p99_bars(rows: list[TargetRow], slo_ms: float | None, load_label: str, footer: list[str]) -> bytes:
    """p99 per target at the common load; invalid targets hatched and labelled."""
    fig, ax = _figure(footer)
    shown = [r for r in rows if r.p99_ms is not None]
    positions = range(len(shown))
    bars = ax.bar(positions, [r.p99_ms for r in shown], color=[COLORS.get(r.target, "grey") for r in shown],
                  hatch=None, edgecolor="black")
    for bar, row in zip(bars, shown, strict=True):
        text = f"{row.p99_ms:,.2f} ms"
        if not row.valid:
            bar.set_hatch("//")
            bar.set_edgecolor(INVALID_COLOR)
            text += "\nINVALID"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    textcoords="offset points", xytext=(0, 3), fontsize=8,
                    color=INVALID_COLOR if not row.valid else "black")
    if slo_ms is not None:
        ax.axhline(slo_ms, color="black", linewidth=1, label=f"SLO: p99 <= {slo_ms:g} ms")
        _legend(ax)
    ax.set_xticks(list(positions), [r.target for r in shown])
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title(textwrap.fill(f"p99 per target at {load_label}", 70), fontsize=10)
    ax.margins(y=0.2)
    return _png(fig)


def bars(labels: list[str], values: list[float], ylabel: str, title: str, footer: list[str]) -> bytes:
    """Plain bars (training time per epoch per trainer)."""
    fig, ax = _figure(footer)
    colors = [COLORS["tf-rest"] if label.startswith("tf") else COLORS["torch-rest"] for label in labels]
    drawn = ax.bar(range(len(values)), values, color=colors)
    for bar, value in zip(drawn, values, strict=True):
        ax.annotate(f"{value:,.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    textcoords="offset points", xytext=(0, 3), fontsize=8)
    ax.set_xticks(list(range(len(labels))), labels)
    ax.set(ylabel=ylabel, title=title)
    ax.margins(y=0.2)
    return _png(fig)
