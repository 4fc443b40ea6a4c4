"""'When to choose which', written from the measured numbers, with the caveats the data carries."""

from __future__ import annotations

from common.spread import MIN_REPEATS, Spread, differ
from report import fmt
from report.doc import Bullets, Paragraph, Section
from report.edge_report import flag_points, flag_text
from report.load import Loaded, Results
from report.verdict import TargetRow, Verdict, highest_throughput, lowest_latency

GENERATOR_LIMIT_SHARE = 0.8  # a target above this share of the generator's own ceiling may be measuring it
HOST_PACE_NOTICE = 0.05  # a host whose in-process ceiling moved this much during a sweep gets a caveat


NO_CLAIM = ("no measurable difference on this machine between {a} ({fa}) and {b} ({fb}): "
            "{why}, so neither is named")


def _why_no_claim(a: Spread, b: Spread) -> str:
    if min(a.n, b.n) < MIN_REPEATS:
        return f"fewer than {MIN_REPEATS} repeats"
    return "their intervals overlap"


def _latency_advice(verdict: Verdict) -> str:
    ranking = lowest_latency(verdict.rows)
    if ranking is None:
        return "Low latency: no valid target has latency figures at a common load, so no winner."
    best, other = ranking.best, ranking.runner_up
    if not ranking.claimed:
        return "Low latency: " + NO_CLAIM.format(
            a=best.target, fa=f"p99 {fmt.spread(best.p99, 2)} ms", b=other.target,
            fb=f"p99 {fmt.spread(other.p99, 2)} ms", why=_why_no_claim(best.p99, other.p99)) + \
            f" (at {verdict.load_label})."
    runner = f"; next {other.target} at p99 {fmt.spread(other.p99, 2)} ms" if other else ""
    return (f"Low latency: choose {best.target} ({fmt.server(best.server)}): p99 {fmt.spread(best.p99, 2)} ms, "
            f"p50 {fmt.spread(best.p50, 2)} ms at {verdict.load_label}{runner}.")


def _throughput_figure(row: TargetRow, basis: str) -> Spread | None:
    return row.slo_max if basis == "slo" else row.saturation


def _throughput_advice(verdict: Verdict) -> str:
    ranking, basis = highest_throughput(verdict.rows)
    if ranking is None:
        return "High throughput: no valid target has a throughput figure, so no winner."
    best, other = ranking.best, ranking.runner_up
    if basis == "slo":
        unit = f"req/s within the p99 SLO of {verdict.slo_ms:g} ms"
    elif verdict.mode == "sweep":
        unit = (f"req/s closed-loop saturation (no valid target stayed within the p99 SLO of {verdict.slo_ms:g} ms "
                f"in the sweep)")
    else:
        unit = f"req/s ({verdict.load_label}; no SLO sweep yet)"
    if not ranking.claimed:
        a, b = _throughput_figure(best, basis), _throughput_figure(other, basis)
        return "High throughput: " + NO_CLAIM.format(a=best.target, fa=f"{fmt.spread(a)} {unit}", b=other.target,
                                                     fb=f"{fmt.spread(b)} req/s", why=_why_no_claim(a, b)) + "."
    return (f"High throughput: choose {best.target} ({fmt.server(best.server)}): "
            f"{fmt.spread(_throughput_figure(best, basis))} {unit}.")


def _framework_advice(verdict: Verdict) -> str | None:
    """Best TensorFlow target against best PyTorch target, on the same throughput basis as the winner."""
    _, basis = highest_throughput(verdict.rows)
    best = {}
    for framework in ("tensorflow", "pytorch"):
        rows = [r for r in verdict.rows if r.valid and r.kind.framework == framework and _throughput_figure(r, basis)]
        best[framework] = max(rows, key=lambda r: (_throughput_figure(r, basis).median, r.target)) if rows else None
    tf_row, torch_row = best["tensorflow"], best["pytorch"]
    if tf_row is None or torch_row is None:
        return None
    tf_figure, torch_figure = _throughput_figure(tf_row, basis), _throughput_figure(torch_row, basis)
    ratio = tf_figure.ratio_to(torch_figure)
    figures = (f"{fmt.spread(tf_figure)} against {fmt.spread(torch_figure)} req/s, "
               f"{'SLO-bounded' if basis == 'slo' else 'saturation'}")
    if not differ(tf_figure, torch_figure):
        return (f"Framework against framework: no measurable difference on this machine: {tf_row.target} against "
                f"{torch_row.target}, {figures}; ratio {ratio.median:.2f}x [{ratio.low:.2f}-{ratio.high:.2f}] "
                f"({_why_no_claim(tf_figure, torch_figure)}).")
    leader = "TensorFlow's" if ratio.median >= 1 else "PyTorch's"
    return (f"Framework against framework: {leader} best target leads; {tf_row.target} serves {ratio.median:.2f}x "
            f"[{ratio.low:.2f}-{ratio.high:.2f}] the throughput of {torch_row.target} ({figures}).")


def _edge_advice(edge: Loaded | None) -> str:
    if edge is None:
        return "On the device: not measured yet (`make edge`)."
    rows = [r for r in edge.data["results"] if not r["flagged"]]
    points = flag_points(edge.data)
    if not rows:
        return f"On the device: every quantized format {flag_text(points)}; none is recommended."
    smallest = min(rows, key=lambda r: (r["bytes"], r["format"]))
    fastest = min(rows, key=lambda r: (r["latency_p50_ms"], r["format"]))
    return (f"On the device: {smallest['format']} is the smallest file within {fmt.points(points)} of accuracy "
            f"({fmt.integer(smallest['bytes'])} bytes, {smallest['accuracy_change_points']:+.2f} points, "
            f"p50 {smallest['latency_p50_ms']:.3f} ms); {fastest['format']} is the fastest "
            f"(p50 {fastest['latency_p50_ms']:.3f} ms, {fmt.integer(fastest['bytes'])} bytes).")


def _server_caveats(verdict: Verdict) -> list[str]:
    dropin = sorted({r.server["identity"] for r in verdict.rows if not r.server.get("official")})
    lines = [f"Not an official binary: {name} served some targets; their numbers describe that server, not "
             f"TF Serving's official binary." for name in dropin]
    env = verdict.loaded.data["environment"]
    if not env["pinning"]["applied"]:
        lines.append("Server and load generator were not pinned to disjoint cores: they competed for "
                     f"{env['host'].get('logical_cpus', '?')} logical CPUs, which lowers every figure.")
    lines.append(f"Absolute numbers hold only for {fmt.hardware(env['host'])}; compare the ratios.")
    return lines


def _generator_caveats(verdict: Verdict) -> list[str]:
    calibration = verdict.loaded.data.get("calibration") if verdict.mode == "sweep" else None
    if not calibration:
        return []
    lines = []
    for row in verdict.rows:
        transport = row.kind.transport
        ceiling = calibration[f"{transport}_rps"]
        if row.valid and row.saturation_rps and ceiling and row.saturation_rps >= GENERATOR_LIMIT_SHARE * ceiling:
            lines.append(f"{row.target}'s saturation throughput ({fmt.rps(row.saturation_rps)} req/s) is within "
                         f"{1 - GENERATOR_LIMIT_SHARE:.0%} of the generator's own {transport} "
                         f"ceiling ({fmt.rps(ceiling)} req/s): the generator may be the limit.")
    return lines


def _host_caveats(verdict: Verdict) -> list[str]:
    """The host's own pace moved during the sweep: differences of that size may be the host's, not the servers'."""
    pace = verdict.loaded.data.get("host_pace") if verdict.mode == "sweep" else None
    moved = {side: f["change"] for side, f in sorted((pace or {}).items()) if abs(f["change"]) >= HOST_PACE_NOTICE}
    if not moved:
        return []
    changes = ", ".join(f"{side} {change:+.0%}" for side, change in moved.items())
    return [f"The host itself moved during the sweep (in-process ceiling from start to end: {changes}): figures "
            "measured at different times may differ by that much because of the host, not the servers."]


def _validity_caveats(verdict: Verdict) -> list[str]:
    invalid = [r for r in verdict.rows if not r.valid]
    lines = [f"Excluded from every winner above: {r.target} is INVALID ({'; '.join(r.reasons)})." for r in invalid]
    if verdict.mode == "sweep" and verdict.common_load is None:
        lines.append("No target has an SLO maximum, so there is no common load and latency is not compared.")
    return lines


def _edge_caveats(edge: Loaded | None) -> list[str]:
    if edge is None:
        return []
    flagged = [r["format"] for r in edge.data["results"] if r["flagged"]]
    host = fmt.hardware(edge.data.get("host") or {})
    lines = [f"Edge latency is single-image on the build host ({host}), not on a phone."]
    if flagged:
        lines.append(f"Not recommended on the device: {', '.join(flagged)} (flagged: "
                     f"{flag_text(flag_points(edge.data))}).")
    return lines


def choose_section(results: Results, verdict: Verdict | None, training_lines: list[str]) -> Section:
    """The recommendations, each derived from a number in the tables, then the caveats."""
    section = Section("choose", "When to choose which")
    section.sources = [loaded.source.describe()
                       for loaded in (verdict.loaded if verdict else None, results.edge) if loaded]
    advice = ([_latency_advice(verdict), _throughput_advice(verdict)] if verdict else
              ["Serving: not measured yet (`make sweep` or `make loadtest`)."])
    framework = _framework_advice(verdict) if verdict else None
    advice += ([framework] if framework else []) + [_edge_advice(results.edge)] + training_lines
    section.add(Bullets(advice))
    caveats = (_validity_caveats(verdict) + _server_caveats(verdict) + _generator_caveats(verdict)
               + _host_caveats(verdict)
               if verdict else []) + _edge_caveats(results.edge)
    if verdict is not None and verdict.mode != "sweep":
        caveats.append("No SLO sweep: the serving advice rests on one load-test run at one load.")
    if caveats:
        section.add(Paragraph("Caveats the data carries:"), Bullets(caveats))
    return section
