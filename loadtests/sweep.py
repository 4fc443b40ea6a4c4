"""`make sweep`: per target, the highest offered rate whose p99 stays within the SLO, with its spread.

Order of work, all recorded in artifacts/results/<sweep-id>/sweep.json (each
measurement is also a run of its own with a summary.json under steps/):

1. calibration: the generator against trivial endpoints (its ceiling here);
2. the in-process ceiling of each framework at batch 1;
3. saturation: in each of `repeats` repeats, every target loaded closed loop;
4. the SLO maximum: `repeats` independent searches (loadtests/search.py), each
   probe an open-loop run with Poisson arrivals long enough for its p99;
5. the common load: the lowest SLO maximum any search of any target found;
   every target is loaded there `repeats` times for its p50 and p99;
6. closed-loop runs at other batch sizes (once each: not a verdict figure);
7. the in-process ceilings again: with step 2, the host's own pace at the start
   and the end (`host_pace`). On the 2-core development machine it fell 11-14 %
   within a sweep, twice; a sweep whose host moved says so.

The servers keep the knobs they were deployed with throughout (no redeploys):
`make tune` (loadtests/tune.py) chooses them beforehand, and the sweep records
the knobs and the tuning that chose them. In 3-5 the targets take turns within
each repeat, in an order rotated from one repeat to the next. A repeat's
saturation is the highest throughput the target reached in that repeat, closed
loop or a valid probe (so the SLO maximum never exceeds it by more than the 5 %
an open-loop probe may fall short).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from common.procs import free_port, stop_group
from common.spread import Spread, spread_text
from common.targets import target_named
from loadtests import calibrate, pinning, repeats, runner, summary
from loadtests.config import RunConfig, SweepConfig
from loadtests.payloads import prepare
from loadtests.progress import Progress
from loadtests.search import search_slo_max
from loadtests.targets import Target, resolve_targets
from serving.config import DeployConfig
from serving.record import read_record

USUAL_PROBES = 6  # a guess, for the progress line's total only (which grows as measurements exceed it)
PROBE_REQUESTS_MARGIN = 1.25  # a probe plans this many times min_requests arrivals: Poisson counts vary
TUNED_FILE = "tuned.json"  # beside the deploy records: which `make tune` run chose each server's knobs


def quick(cfg: SweepConfig) -> SweepConfig:
    """The demo's sweep: batch sizes 1 and 8 (repeats, SLO search and step length stay the caller's)."""
    return dataclasses.replace(cfg, batch_sizes=(1, 8))


def tuned_by(run_dir: Path, side: str, running: dict) -> str | None:
    """The `make tune` run whose choice the server runs with now (None: its knobs were not chosen by one)."""
    path = run_dir / TUNED_FILE
    if not path.is_file():
        return None
    tuned = json.loads(path.read_text(encoding="utf-8")).get(side)
    return tuned["run_id"] if tuned is not None and shown_knobs(running) == tuned["knobs"] else None


def current_knobs(side: str, base: DeployConfig) -> dict:
    """The knobs of the running server, in the grid's terms, from its deploy record ({} when none runs).

    TF: "file" is kept so that restoring the deployment found at the start gives the server that very
    file again; sizes the record does not know (None) are left out, so no grid entry matches them.
    """
    record = read_record(base.run_dir, side)
    if record is None:
        return {}
    knobs = dataclasses.asdict(record.knobs)
    if side == "torch":
        return {key: knobs[key] for key in ("workers", "batch_size", "max_batch_delay_ms")}
    found = {"enable_batching": knobs["enable_batching"], "file": knobs["batching_parameters_file"]}
    if found["enable_batching"]:
        found.update({key: knobs[key] for key in ("max_batch_size", "batch_timeout_micros") if knobs[key] is not None})
    return found


class Sweep:
    def __init__(self, cfg: SweepConfig, label: str = "sweep") -> None:
        self.cfg = cfg
        self.base = cfg.run
        self.deploy_cfg = DeployConfig(model=self.base.model, artifacts=self.base.artifacts)
        self.dir = self.base.run_dir
        self.payloads: dict[int, Path] = {}
        self.progress = Progress(0, label)  # "[<label> k of N, elapsed, left]" before each measurement

    @property
    def profile(self) -> str:
        from loadtests.payloads import load

        return load(self.payload(1)).meta["profile"]

    def payload(self, batch_size: int) -> Path:
        if batch_size not in self.payloads:
            self.payloads[batch_size] = prepare(self.deploy_cfg.paths, self.base.model, batch_size,
                                                self.dir / f"payloads-b{batch_size}.npz")
        return self.payloads[batch_size]

    def probe_duration(self, rate: float) -> float:
        """Seconds of an open-loop run at `rate`: the step length, or longer so the p99 has its requests."""
        needed = PROBE_REQUESTS_MARGIN * self.cfg.min_requests / rate
        return self.base.warmup_s + max(self.base.window_s, needed)

    def measure(self, target_name: str, label: str, batch_size: int = 1, rate: float | None = None,
                seed: int = 0) -> dict:
        """One run of one target (its own run directory and summary.json); that run's result.

        No in-process ceiling per step: the sweep measures it once per framework.
        """
        duration = self.probe_duration(rate) if rate else self.base.duration_s
        cfg = dataclasses.replace(self.base, targets=(target_name,), rate=rate, batch_size=batch_size,
                                  run_id=f"{self.base.run_id}/steps/{target_name}-{label}", ceiling=False,
                                  quiet=True, repeats=1, duration_s=duration, seed=seed)
        target = resolve_targets((target_name,), self.deploy_cfg, cfg.host)[0]
        offered = f"{rate:g} req/s offered, {duration - cfg.warmup_s:.0f} s" if rate else f"closed, b{batch_size}"
        self.progress.begin(f"{target_name} {label} ({offered})")
        document = runner.run(cfg, [target], self.payload(batch_size))
        self.progress.end()
        result = document["targets"][target_name]
        result["run_id"] = cfg.run_id
        print(f"  {target_name:<10} {label:<24} {result['throughput_rps']:8.1f} req/s  "
              f"p50 {_ms(result['latency_ms']['p50'])}  p99 {_ms(result['latency_ms']['p99'])}  "
              f"({result['latency_ms']['samples']} requests)  "
              f"{'valid' if result['valid'] else 'INVALID: ' + '; '.join(result['invalid_reasons'])}", flush=True)
        return result

    def calibrate(self, plan: pinning.CpuPlan) -> dict:
        rest_port, grpc_port = free_port(), free_port()
        endpoints = calibrate.start_endpoints(rest_port, grpc_port, plan.server_cpus, self.dir / "calibration.log")
        figures = {}
        try:
            for name, port in (("tf-rest", rest_port), ("tf-grpc", grpc_port)):
                # Only its address matters: drive() sends the REST or gRPC payloads the target name picks.
                target = Target(name, "127.0.0.1", port, {"identity": "loadtests/calibrate.py trivial endpoint"})
                cfg = dataclasses.replace(self.base, targets=(name,), rate=None, check_every=0, ceiling=False,
                                          run_id=f"{self.base.run_id}/calibration", quiet=True)
                raw = runner.drive(cfg, target, self.payload(1), plan)
                figures[name] = {"rps": len(raw["latencies_ms"]) / (raw["window_s"] or cfg.window_s),
                                 "cpu": raw["cpu_percent"]}
        finally:
            stop_group(endpoints.pid)
        cpu = [f["cpu"] for f in figures.values() if f["cpu"] is not None]
        result = {"rest_rps": figures["tf-rest"]["rps"], "grpc_rps": figures["tf-grpc"]["rps"],
                  "users": self.base.users, "generator_cpu_percent": max(cpu) if cpu else None,
                  "endpoints": "asyncio HTTP/1.1 keep-alive and grpcio generic handler, answering at once"}
        print(f"  calibration: generator ceiling {result['rest_rps']:.0f} req/s REST, "
              f"{result['grpc_rps']:.0f} req/s gRPC ({self.base.users} users)", flush=True)
        return result

    def closed_loop(self, names: list[str], points: list[dict[str, dict]],
                    deploy: Callable[[dict[str, dict]], None] | None = None) -> dict[str, list[list[dict]]]:
        """Closed-loop runs of every target at every knob point in every repeat: runs[name][point][repeat].

        `deploy(point)` puts the servers on a point before its runs (the sweep's one point: the servers
        as deployed, so none). Within a repeat the points take turns, and at each point the targets do,
        both in an order rotated from one repeat to the next: a machine that speeds up or slows down
        over minutes favours no point and no target.
        """
        runs: dict[str, list[list[dict]]] = {name: [[] for _ in points] for name in names}
        for repeat in range(self.base.repeats):
            for index in repeats.rotated(range(len(points)), repeat):
                if deploy is not None:
                    deploy(points[index])
                for name in repeats.rotated(names, repeat):
                    label = f"closed-knobs{index}-r{repeat + 1}" if len(points) > 1 else f"saturation-r{repeat + 1}"
                    runs[name][index].append(_run_row(self.measure(name, label), repeat))
        return runs

    def in_turns(self, names: list[str], measure) -> dict[str, list]:
        """`measure(name, repeat)` for every target in every repeat: turns within a repeat, order rotated."""
        results: dict[str, list] = {name: [] for name in names}
        for repeat in range(self.base.repeats):
            for name in repeats.rotated(names, repeat):
                results[name].append(measure(name, repeat))
        return results

    def search(self, name: str, repeat: int, start_rps: float) -> dict:
        """One independent SLO search; every probe a fresh open-loop run with its own Poisson seed."""
        probes = iter(range(1000))

        def probe(rate: float) -> dict:
            index = next(probes)
            result = self.measure(name, f"search-r{repeat + 1}-p{index + 1}-{rate:g}rps", rate=rate,
                                  seed=self.base.seed + 1000 * repeat + index)
            return {**_run_row(result, repeat), "offered_rps": rate, "purpose": "slo-search"}

        found = search_slo_max(probe, start_rps, self.cfg.slo_ms, self.cfg.tolerance)
        print(f"  {name:<10} search {repeat + 1}: SLO max {_rps(found.slo_max_rps)} ({found.note})", flush=True)
        return {"repeat": repeat + 1, **found.as_json()}

    def at_load(self, name: str, repeat: int, rate: float) -> dict:
        result = self.measure(name, f"common-r{repeat + 1}-{rate:g}rps", rate=rate,
                              seed=self.base.seed + 999_000 + repeat)
        return {**_run_row(result, repeat), "offered_rps": rate, "purpose": "common-load"}

    def batch_sizes(self, name: str, batch1: dict) -> list[dict]:
        rows = [{"batch_size": 1, **{k: batch1[k] for k in ("throughput_rps", "latency_ms", "valid", "run_id")},
                 "images_per_s": batch1["throughput_rps"]}]
        for batch_size in sorted(set(self.cfg.batch_sizes) - {1}):
            result = self.measure(name, f"closed-b{batch_size}", batch_size=batch_size)
            rows.append({"batch_size": batch_size, "throughput_rps": result["throughput_rps"],
                         "images_per_s": result["images_per_s"], "latency_ms": result["latency_ms"],
                         "valid": result["valid"], "run_id": result["run_id"]})
        return rows


def _run_row(result: dict, repeat: int) -> dict:
    """What the sweep keeps of one run."""
    return {"repeat": repeat + 1, "throughput_rps": result["throughput_rps"], "latency_ms": result["latency_ms"],
            "failures": result["failures"], "failures_by_kind": result["failures_by_kind"],
            "valid": result["valid"], "invalid_reasons": result["invalid_reasons"],
            "run_id": result["run_id"], "server_side": result["repeats"][0].get("server_side")}


def saturation_per_repeat(closed: list[dict], searches: list[dict]) -> list[float]:
    """Each repeat's saturation: its closed-loop throughput, or a valid probe's if that reached higher."""
    figures = []
    for run, search in zip(closed, searches, strict=True):
        probes = [p["throughput_rps"] for p in search["probes"] if p["valid"]]
        figures.append(max([run["throughput_rps"], *probes]))
    return figures


def common_load(slo_maxima: dict[str, Spread | None]) -> float | None:
    """The lowest SLO maximum any search of any target found: every target met the SLO at it once at least."""
    lows = [spread.low for spread in slo_maxima.values() if spread is not None]
    return round(min(lows), 1) if lows else None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _rps(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f} req/s"


def _json(spread: Spread | None) -> dict | None:
    return spread.as_json() if spread else None


def run_sweep(cfg: SweepConfig) -> dict:
    base = cfg.run
    sweep = Sweep(cfg)
    targets = resolve_targets(base.targets, sweep.deploy_cfg, base.host)  # exit 2 before any load
    names = [t.name for t in targets]
    sides = sorted({t.side for t in targets})
    found = {side: current_knobs(side, sweep.deploy_cfg) for side in sides}
    sweep.dir.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"sweep {base.run_id}: SLO p99 <= {cfg.slo_ms:g} ms, {base.users} users closed loop, {base.repeats} repeats, "
          f"probes of >= {cfg.min_requests} requests (Poisson arrivals), steps of {base.duration_s:g} s "
          f"({base.warmup_s:g} s warm-up)", flush=True)
    sweep.progress.replan(_planned(cfg, len(names)))
    plan = pinning.plan_cpus([t.server["cpus"] for t in targets], base.pin)
    calibration = sweep.calibrate(plan)
    ceilings = measure_ceilings(base, sides, plan.server_cpus) if base.ceiling else {}  # --no-ceiling: null
    knobs = {side: knob_record(sweep.deploy_cfg.run_dir, side, found[side]) for side in sides}
    closed = {name: runs[0] for name, runs in sweep.closed_loop(names, [found]).items()}
    results = _measure_targets(sweep, names, closed, found, ceilings)
    pace = host_pace(ceilings, measure_ceilings(base, sides, plan.server_cpus, "at the end") if ceilings else {})
    common = common_load({name: Spread.from_json(r["slo_max"]) for name, r in results.items()})
    invalid = [f"{name}: no SLO maximum found" for name, r in results.items() if r["slo_max"] is None]
    invalid += [f"{name}: {reason}" for name, r in results.items() for reason in r["invalid_reasons"]]
    document = {"kind": "sweep", "schema_version": 2, "run_id": base.run_id, "created": created,
                "slo_ms": cfg.slo_ms, "model": {"name": base.model, "profile": sweep.profile, "batch_size": 1},
                "method": {"repeats": base.repeats, "users": base.users, "arrivals": base.arrivals,
                           "min_requests": cfg.min_requests, "tolerance": cfg.tolerance, "knobs": knobs,
                           "spread": "median [min-max] over the repeats",
                           "order": [repeats.rotated(names, r) for r in range(base.repeats)]},
                "environment": runner.environment_record(plan, base), "calibration": calibration,
                "common_load_rps": common, "host_pace": pace, "targets": results, "valid": not invalid,
                "invalid_reasons": invalid}
    summary.write(sweep.dir / "sweep.json", document, "sweep")
    print(sweep_table(document))
    print(f"sweep: {sweep.dir / 'sweep.json'}")
    return document


def knob_record(run_dir: Path, side: str, running: dict) -> dict:
    """A server's knobs for the sweep's record, and the `make tune` run that chose them (None: as deployed)."""
    record = {"knobs": shown_knobs(running), "tuned_by": tuned_by(run_dir, side, running)}
    origin = f"chosen by {record['tuned_by']}" if record["tuned_by"] else "as deployed: no make tune run chose them"
    print(f"  {side}: knobs {knobs_text(record['knobs'])} ({origin})", flush=True)
    return record


def measure_ceilings(base: RunConfig, sides: list[str], server_cpus: list[int] | None,
                     when: str = "") -> dict[str, dict]:
    """The in-process ceiling of each framework at batch 1, on the servers' CPUs."""
    ceilings = {}
    for side in sides:
        ceilings[side] = runner.measure_ceiling(dataclasses.replace(base, batch_size=1), side, server_cpus)
        print(f"  {side}: in-process ceiling {ceilings[side]['calls_per_s']:.0f} calls/s at batch 1"
              f"{' ' + when if when else ''}", flush=True)
    return ceilings


def host_pace(start: dict[str, dict], end: dict[str, dict]) -> dict[str, dict] | None:
    """Per framework, the in-process ceiling at the sweep's start and end, and its change (None: not measured).

    The same program on the same CPUs, with no server and no network: when it moved, the host
    did, and every figure measured between the two may have moved with it.
    """
    if not start or not end:
        return None
    pace = {side: {"start_calls_per_s": start[side]["calls_per_s"], "end_calls_per_s": end[side]["calls_per_s"],
                   "change": end[side]["calls_per_s"] / start[side]["calls_per_s"] - 1.0} for side in start}
    for side, figures in pace.items():
        print(f"  {side}: host pace {figures['change']:+.1%} from the start of the sweep to its end "
              "(in-process ceiling)", flush=True)
    return pace


def _planned(cfg: SweepConfig, targets: int) -> int:
    """Measurements the sweep expects (a search's probes are not known ahead: its usual count is planned)."""
    per_target = cfg.run.repeats * (1 + USUAL_PROBES + 1) + len(set(cfg.batch_sizes) - {1})
    return targets * per_target


def shown_knobs(knobs: dict) -> dict:
    """Knobs as recorded: a batching file's path is the deployment's detail, not a knob."""
    return {key: value for key, value in knobs.items() if key != "file"}


def _measure_targets(sweep: Sweep, names: list[str], closed: dict[str, list[dict]], knobs: dict[str, dict],
                     ceilings: dict) -> dict:
    """SLO searches and the common load for every target, in turns; batch sizes after.

    `closed`: each target's saturation runs, one per repeat; `knobs`: each server's, as deployed.
    """
    start = {name: Spread.of([run["throughput_rps"] for run in closed[name]]).median for name in names}
    searches = sweep.in_turns(names, lambda name, repeat: sweep.search(name, repeat, start[name]))
    slo_maxima = {name: Spread.of([s["slo_max_rps"] for s in searches[name]]) for name in names}
    common = common_load(slo_maxima)
    at_common = sweep.in_turns(names, lambda name, repeat: sweep.at_load(name, repeat, common)) if common else {}
    results = {}
    for name in names:
        side = target_named(name).side
        saturation = Spread.of(saturation_per_repeat(closed[name], searches[name]))
        ceiling = ceilings.get(side)
        server = resolve_targets((name,), sweep.deploy_cfg, sweep.base.host)[0].server
        results[name] = {
            "server": server, "knob_grid": [],  # sweeps before `make tune` held the knob grid here
            "best_knobs": shown_knobs(knobs[side]),
            "saturation_rps": saturation.median, "saturation": saturation.as_json(), "saturation_runs": closed[name],
            "slo_max_rps": slo_maxima[name].median if slo_maxima[name] else None,
            "slo_max": _json(slo_maxima[name]), "searches": searches[name],
            "at_common_load": _at_load(at_common.get(name)),
            "steps": [p for s in searches[name] for p in s["probes"]] + at_common.get(name, []),
            "batch_sizes": sweep.batch_sizes(name, closed[name][0]),
            "ceiling": {"in_process_rps": ceiling["calls_per_s"], "runtime": ceiling["runtime"], "batch_size": 1,
                        "fraction": saturation.median / ceiling["calls_per_s"]} if ceiling else None}
        results[name]["invalid_reasons"] = target_reasons(results[name])
    return results


def _at_load(runs: list[dict] | None) -> dict | None:
    """A target's p50/p99 at the common load, over its repeats there."""
    if not runs:
        return None
    return {"offered_rps": runs[0]["offered_rps"],
            "throughput_rps": _json(Spread.of([r["throughput_rps"] for r in runs])),
            "p50_ms": _json(Spread.of([r["latency_ms"]["p50"] for r in runs])),
            "p99_ms": _json(Spread.of([r["latency_ms"]["p99"] for r in runs])),
            "valid": all(r["valid"] for r in runs)}


def target_reasons(result: dict) -> list[str]:
    """Why a sweep target's verdict figures cannot be trusted: an invalid saturation or common-load run."""
    runs = result["saturation_runs"] + [s for s in result["steps"] if s.get("purpose") == "common-load"]
    return [f"{run['run_id'].rsplit('/', 1)[-1]}: {reason}" for run in runs for reason in run["invalid_reasons"]]


def knobs_text(knobs: dict) -> str:
    """The grid's knobs in a few words: 'batching 8 / 1000 us', 'batching off', '1 worker, batch 8, 5 ms'."""
    if "enable_batching" in knobs:
        if not knobs["enable_batching"]:
            return "batching off"
        return (f"batching {knobs['max_batch_size']} / {knobs['batch_timeout_micros']} us"
                if "max_batch_size" in knobs else "batching on (deploy's file)")
    if "workers" in knobs:
        return (f"{knobs['workers']} worker{'s' if knobs['workers'] > 1 else ''}, batch {knobs['batch_size']}, "
                f"{knobs['max_batch_delay_ms']} ms")
    return ", ".join(f"{k}={v}" for k, v in knobs.items())


def sweep_table(document: dict) -> str:
    """Per target: its server's knobs, saturation and SLO max as median [min-max], p99 at the common load."""
    common = document["common_load_rps"]
    lines = [f"median [min-max] over {document['method']['repeats']} repeats; common load "
             f"{'none' if common is None else f'{common:g} req/s'}",
             f"{'target':<11}{'knobs':<26}{'saturation req/s':>28}{'SLO max req/s':>28}{'p99 ms at common':>24}"
             f"{'x ceiling':>10}"]
    for name, result in sorted(document["targets"].items()):
        at_load = result["at_common_load"] or {}
        fraction = f"{result['ceiling']['fraction']:>10.2f}" if result["ceiling"] else f"{'-':>10}"
        lines.append(f"{name:<11}{knobs_text(result['best_knobs']):<26}{spread_text(result['saturation']):>28}"
                     f"{spread_text(result['slo_max']):>28}{spread_text(at_load.get('p99_ms'), 2):>24}{fraction}")
    return "\n".join(lines)
