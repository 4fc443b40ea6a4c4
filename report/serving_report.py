"""The serving sections: the verdict table, the SLO sweep in detail, and every load-test run."""

from __future__ import annotations

from typing import Any

from common.spread import Spread
from common.targets import ordered, target_named
from report import fmt, plots
from report.doc import Figure, Paragraph, Row, Section, Table
from report.load import Loaded, Results
from report.provenance import figure_footer, run_provenance
from report.verdict import Verdict

NOT_MEASURED_SERVING = ("not measured yet: run `make sweep` (SLO sweep, open loop) or `make loadtest` "
                        "(one closed-loop run) with both servers deployed")
VERDICT_COLUMNS = ["target", "server", "SLO max req/s", "saturation req/s", "offered req/s", "p50 ms", "p99 ms",
                   "failures", "% of in-process ceiling", "cold start s", "status"]
CEILING_COLUMN = VERDICT_COLUMNS[-3]


def sweep_run_ids(documents: list[Loaded]) -> set[str]:
    """Run ids of the steps, knob-grid points and batch sizes inside sweeps and tunings (each also a summary.json)."""
    ids = set()
    for document in documents:
        for entry in document.data["targets"].values():
            for key in ("steps", "knob_grid", "batch_sizes", "saturation_runs"):
                ids.update(item["run_id"] for item in entry.get(key, []))
    return ids


def servers_of(loaded: Loaded) -> dict[str, dict[str, Any]]:
    targets = loaded.data["targets"]
    return {t: targets[t]["server"] for t in ordered(targets)}


def verdict_table(verdict: Verdict) -> Table:
    rows = [Row([r.target, fmt.server(r.server), fmt.spread(r.slo_max), fmt.spread(r.saturation),
                 fmt.rps(r.offered_rps), fmt.spread(r.p50, 2), fmt.spread(r.p99, 2), fmt.integer(r.failures),
                 fmt.percent(r.ceiling_fraction), fmt.number(r.server.get("cold_start_s")),
                 fmt.status(r.valid, r.reasons)], invalid=not r.valid)
            for r in verdict.rows]
    slo = (f"SLO max = the highest offered rate whose probe met p99 <= {verdict.slo_ms:g} ms (valid, >= 95% of the "
           f"offered load achieved), found by search in each repeat; " if verdict.slo_ms is not None
           else "SLO max needs a sweep (`make sweep`); ")
    saturation = ("saturation = the highest throughput reached in each repeat (closed loop or a valid probe)"
                  if verdict.mode == "sweep" else "saturation = the run's throughput")
    failures = "failures summed over all runs" if verdict.mode == "sweep" else "failures in the run"
    caption = (f"Verdict at {verdict.load_label}. Figures are median [min-max] over the repeats. {slo}{saturation}; "
               f"{failures}; cold start = deploy to the first correct answer; "
               f"{CEILING_COLUMN} = saturation throughput as a share of the same model's in-process throughput "
               f"({'; '.join(sorted({f'{r.target}: {r.ceiling_note}' for r in verdict.rows}))}).")
    return Table("verdict", caption, VERDICT_COLUMNS, rows)


def verdict_section(results: Results, verdict: Verdict | None) -> Section:
    section = Section("verdict", "Verdict: four serving targets")
    if verdict is None:
        return section.add(Paragraph(NOT_MEASURED_SERVING, "note"))
    loaded = verdict.loaded
    servers = servers_of(loaded)
    section.sources.append(loaded.source.describe())
    section.provenance = run_provenance(loaded, servers)
    if verdict.mode != "sweep":
        section.add(Paragraph(f"No SLO sweep found: this verdict uses the newest {verdict.mode}-loop run, "
                              f"{loaded.source.run_id}; run `make sweep` for SLO-bounded throughput.", "note"))
    elif len(results.sweeps) > 1:
        older = ", ".join(s.source.run_id or s.source.path for s in results.sweeps[1:])
        section.add(Paragraph(f"Newest sweep used; older sweeps not in this table: {older}."))
    if not loaded.data["valid"]:
        kind, basis = ("sweep", "steps") if verdict.mode == "sweep" else ("run", "result")
        section.add(Paragraph(f"The {kind} file marks itself invalid ({'; '.join(loaded.data['invalid_reasons'])}); "
                              f"each target below is judged by its own {basis}, so valid targets still count."))
    section.add(Paragraph("Rows marked INVALID are shown with their numbers but never win below."),
                verdict_table(verdict))
    footer = figure_footer(loaded, servers)
    section.add(Figure("p99-per-target", "p99 latency per target",
                       plots.p99_bars(verdict.rows, verdict.slo_ms, verdict.load_label, footer), footer))
    return section


def _rows(targets: dict[str, Any], key: str, sort_key: str | None, cells) -> list[Row]:
    """One row per step, batch size or knob point; each is valid or not on its own record."""
    rows = []
    for target, entry in targets.items():
        items = sorted(entry[key], key=lambda i: i[sort_key]) if sort_key else entry[key]
        rows += [Row([target, *cells(entry, item), fmt.status(item["valid"], item.get("invalid_reasons", [])),
                      item["run_id"]], invalid=not item["valid"]) for item in items]
    return rows


def _steps_table(targets: dict[str, Any]) -> Table:
    rows = _rows(targets, "steps", None, lambda _, s: [
        fmt.integer(s["repeat"]), s["purpose"], fmt.rps(s["offered_rps"]), fmt.rps(s["throughput_rps"]),
        fmt.ms(s["latency_ms"]["p50"]), fmt.ms(s["latency_ms"]["p99"]),
        fmt.integer(s["latency_ms"].get("samples")), fmt.integer(s["failures"]), s.get("outcome", "")])
    return Table("sweep-steps", "Every open-loop run with each target's best knobs, in the order measured: the SLO "
                 "searches' probes (outcome: met the SLO, missed it, or the generator could not drive it), then the "
                 "runs at the common load. A p99 needs 1,000 requests; with fewer it is not reported.",
                 ["target", "repeat", "purpose", "offered req/s", "throughput req/s", "p50 ms", "p99 ms", "requests",
                  "failures", "outcome", "status", "run id"], rows)


def _batch_table(targets: dict[str, Any]) -> Table:
    rows = _rows(targets, "batch_sizes", "batch_size", lambda _, r: [
        fmt.integer(r["batch_size"]), fmt.rps(r["throughput_rps"]), fmt.number(r["images_per_s"])])
    return Table("batch-sizes", "Throughput against images per request.",
                 ["target", "batch size", "requests/s", "images/s", "status", "run id"], rows)


KNOB_COLUMNS = ["target", "knobs", "repeat", "requests/s", "p99 ms", "chosen", "status", "run id"]


def _knob_rows(targets: dict[str, Any], chosen: dict[str, dict[str, Any]]) -> list[Row]:
    """Every closed-loop run of a knob grid; `chosen`: per target, the knobs its server kept."""
    def p99(point: dict[str, Any]) -> float | None:
        latency = point["latency_ms"]
        return latency.get("p99") if isinstance(latency, dict) else None

    return _rows(targets, "knob_grid", None, lambda e, k: [
        fmt.knobs(k["knobs"]), fmt.integer(k.get("repeat")), fmt.rps(k["throughput_rps"]), fmt.ms(p99(k)),
        "chosen" if k["knobs"] == chosen[e["name"]] else ""])


def _sweep_knob_table(targets: dict[str, Any]) -> Table:
    """A sweep from before `make tune`, which ran the knob grid itself."""
    named = {name: {**entry, "name": name} for name, entry in targets.items()}
    rows = _knob_rows(named, {name: entry["best_knobs"] for name, entry in targets.items()})
    return Table("knob-grid", "Server knobs tried per target, closed loop, every point in every repeat (the chosen "
                 "point's runs are the saturation runs, and its knobs ran the steps above). Per server the simplest "
                 "point is kept unless a later one's throughput, summed over the server's targets, beats it beyond "
                 "the spread.", KNOB_COLUMNS, rows)


def tune_table(tune: dict[str, Any], table_id: str = "knob-grid") -> Table:
    """The knob grid of one `make tune` run, with the point each server kept."""
    kept = {side: choice["points"][choice["chosen"]]["knobs"] for side, choice in tune["choice"].items()}
    targets = {name: {**tune["targets"][name], "name": name} for name in ordered(tune["targets"])}
    chosen = {name: kept[target_named(name).side] for name in targets}
    method = tune["method"]
    return Table(table_id, f"Server knobs tried by make tune {tune['run_id']}: closed loop, {method['users']} users, "
                 f"{method['repeats']} repeats; {method['rule']}. The sweep ran with the chosen knobs.",
                 KNOB_COLUMNS, _knob_rows(targets, chosen))


def _knob_tables(sweep: dict[str, Any], tunes: list[Loaded]) -> list[Table | Paragraph]:
    """How the sweep's knobs were chosen: the grid it ran itself (older sweeps), or the tuning it names."""
    if any(entry["knob_grid"] for entry in sweep["targets"].values()):
        return [_sweep_knob_table(sweep["targets"])]
    named = sorted({k["tuned_by"] for k in sweep["method"].get("knobs", {}).values() if k["tuned_by"]})
    found = {t.data["run_id"]: t.data for t in tunes}
    missing = [run_id for run_id in named if run_id not in found]
    present = [run_id for run_id in named if run_id in found]
    items: list[Table | Paragraph] = [tune_table(found[run_id], "knob-grid" if i == 0 else f"knob-grid-{i + 1}")
                                      for i, run_id in enumerate(present)]
    if missing:
        items.append(Paragraph(f"The tuning that chose the knobs is not under results/: {', '.join(missing)}.", "note"))
    if not named:
        items.append(Paragraph("No knob grid: the servers ran with the knobs they were deployed with (`make tune` "
                               "chooses them by measurement).", "note"))
    return items


SERVER_SIDE_COLUMNS = ["target", "run", "server CPU % mean", "CPU % max", "RSS MiB start", "RSS MiB end",
                       "queue ms", "inference ms", "mean batch", "batch sizes (batches)", "not available"]


def _server_side_cells(side: dict[str, Any] | None) -> list[str]:
    if not side:
        return [fmt.MISSING] * 8 + ["not recorded"]
    cpu, rss, batch = side["cpu_percent"] or {}, side["rss_mib"] or {}, side["batch_size"] or {}
    histogram = batch.get("histogram") or {}
    sizes = ", ".join(f"{size}: {count}" for size, count in sorted(histogram.items(), key=lambda kv: int(kv[0])))
    return [fmt.number(cpu.get("mean")), fmt.number(cpu.get("max")), fmt.number(rss.get("start")),
            fmt.number(rss.get("end")), fmt.ms(side["queue_ms_mean"]), fmt.ms(side["inference_ms_mean"]),
            fmt.number(batch.get("mean"), 2), sizes or fmt.MISSING, "; ".join(side["unavailable"]) or ""]


def server_side_table(items: list[tuple[str, str, dict[str, Any] | None]], where: str) -> Table:
    """What each server did during each run (target, run label, server_side as loadtests/server_stats.py writes it)."""
    rows = [Row([target, label, *_server_side_cells(side)]) for target, label, side in items]
    return Table(f"server-side-{where}", "The server's side of each steady window: CPU (100% = one core) and RSS "
                 "summed over its processes (psutil), queue and inference time per request and the batch sizes it "
                 "ran, from the server's own metrics (TorchServe's metrics API, the drop-in's Prometheus page).",
                 SERVER_SIDE_COLUMNS, rows)


def _sweep_server_side(targets: dict[str, Any]) -> Table:
    return server_side_table([(target, f"saturation, repeat {run['repeat']}", run.get("server_side"))
                              for target, entry in targets.items() for run in entry["saturation_runs"]], "sweep")


def host_pace_text(pace: dict[str, Any] | None) -> str:
    """The in-process ceilings at the sweep's start and end: how much the host itself moved meanwhile."""
    if not pace:
        return ("Host pace: not recorded (the sweep measured no in-process ceiling at its end), so a change of the "
                "host during the sweep cannot be told from a change of the servers.")
    moves = "; ".join(fmt.pace(side, figures["start_calls_per_s"], figures["end_calls_per_s"])
                      for side, figures in sorted(pace.items()))
    return (f"Host pace, the in-process ceiling at the sweep's start and end (the same program on the servers' CPUs, "
            f"no server, no network): {moves}.")


def _knob_rule(method: dict[str, Any]) -> str:
    """Which knobs the servers ran with and who chose them (older sweeps chose them themselves)."""
    if method.get("knobs"):
        return "; ".join(f"{side}: {fmt.knobs(k['knobs'])}, "
                         f"{'chosen by make tune ' + k['tuned_by'] if k['tuned_by'] else 'as deployed, not tuned'}"
                         for side, k in sorted(method["knobs"].items()))
    choice = method.get("knob_choice")
    if not choice:
        return "not recorded by this sweep"
    return next(iter(choice.values()))["rule"]


def _method(sweep: dict[str, Any]) -> str:
    method = sweep["method"]
    order = "; ".join(", ".join(turn) for turn in method["order"])
    return (f"Method: {method['repeats']} independent repeats of every verdict figure, a fresh locust process for "
            f"each run; within a repeat the targets take turns (orders: {order}). Saturation: closed loop, "
            f"{method['users']} users, with each server's knobs (knob choice: "
            f"{_knob_rule(method)}). SLO maximum: per repeat, a search from the saturation rate (bracket, then "
            f"bisect to within {method['tolerance']:.0%}); each probe open loop with {method['arrivals']} arrivals, "
            f"long enough for at least {method['min_requests']:,} requests; a probe is invalid when it achieves less "
            f"than 95% of the load offered, drops arrivals or fails requests.")


def sweep_section(results: Results, verdict: Verdict | None) -> Section:
    section = Section("sweep", "SLO sweep: latency against load, throughput against batch size")
    if not results.sweeps:
        return section.add(Paragraph("not measured yet: run `make sweep` (the plots of latency against offered "
                                     "load and throughput against batch size come from it)", "note"))
    loaded = results.sweeps[0]
    sweep, servers = loaded.data, servers_of(loaded)
    targets = {t: sweep["targets"][t] for t in ordered(sweep["targets"])}
    section.sources.append(loaded.source.describe())
    section.provenance = run_provenance(loaded, servers)
    calibration = sweep["calibration"]
    section.add(Paragraph(_method(sweep)), Paragraph(
        f"Generator ceiling on this machine (trivial local endpoints, {calibration['users']} users): "
        f"REST {fmt.rps(calibration['rest_rps'])} req/s, gRPC {fmt.rps(calibration['grpc_rps'])} req/s. "
        f"A target near these figures measures the generator, not the server."),
        Paragraph(host_pace_text(sweep.get("host_pace"))))
    footer = figure_footer(loaded, servers)
    invalid, common = (verdict.invalid_targets, verdict.common_load) if verdict else (set(), None)
    section.add(
        Figure("latency-vs-load", "Latency percentiles against offered load", plots.latency_vs_load(
            targets, invalid, sweep["slo_ms"], common, footer), footer),
        _steps_table(targets),
        Figure("throughput-vs-batch", "Throughput against batch size", plots.throughput_vs_batch(targets, footer),
               footer),
        _batch_table(targets), *_knob_tables(sweep, results.tunes), _sweep_server_side(targets))
    return section


def _run_rows(loaded: Loaded) -> list[Row]:
    run = loaded.data
    rows = []
    for target in ordered(run["targets"]):
        result = run["targets"][target]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(result["failures_by_kind"].items()))
        generator = result["generator"]
        rows.append(Row([run["run_id"], run["created"], f"{run['mode']}, {run['load']['users']} users", target,
                         fmt.server(result["server"]), fmt.spread(Spread.from_json(result["spread"]["throughput_rps"])),
                         fmt.spread(Spread.from_json(result["spread"]["p50_ms"]), 2),
                         fmt.spread(Spread.from_json(result["spread"]["p99_ms"]), 2),
                         fmt.integer(result["failures"]) + (f" ({kinds})" if kinds else ""),
                         fmt.number(generator["cpu_percent"], 0) + ("% SATURATED" if generator["saturated"] else "%"),
                         fmt.percent((result["ceiling"] or {}).get("fraction")),
                         fmt.status(result["valid"], result["invalid_reasons"])], invalid=not result["valid"]))
    return rows


def runs_section(results: Results, in_sweeps: set[str]) -> Section:
    """The standalone runs: every summary.json whose run id is not one of the sweep's (`in_sweeps`)."""
    section = Section("runs", "Load-test runs")
    standalone = [s for s in results.summaries if s.data["run_id"] not in in_sweeps]
    if not standalone:
        return section.add(Paragraph("no standalone load-test run: run `make loadtest`"
                                     + (" (the sweep's own step runs are in the sweep tables)" if in_sweeps else ""),
                                     "note"))
    section.sources = [s.source.describe() for s in standalone]
    section.provenance = [line for s in standalone for line in run_provenance(s, servers_of(s))]
    if len(standalone) < len(results.summaries):
        section.add(Paragraph(f"{len(results.summaries) - len(standalone)} step runs of the sweep are summarised in "
                              "the sweep tables, not repeated here."))
    rows = [row for loaded in standalone for row in _run_rows(loaded)]
    sides = [(target, f"{loaded.data['run_id']}, repeat {repeat['repeat']}", repeat.get("server_side"))
             for loaded in standalone for target in ordered(loaded.data["targets"])
             for repeat in loaded.data["targets"][target]["repeats"]]
    return section.add(Table("runs", "Every standalone run, newest first; req/s, p50 and p99 as median [min-max] "
                             "over the run's repeats; invalid runs and targets are labelled.",
                             ["run id", "created", "load", "target", "server", "req/s", "p50 ms", "p99 ms",
                              "failures", "generator CPU", CEILING_COLUMN, "status"], rows),
                       server_side_table(sides, "runs"))
