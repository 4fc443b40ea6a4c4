"""The serving verdict computed from the numbers: each target's figures with their spreads, and the winners.

Every figure that can decide something (SLO maximum, saturation, p50/p99 at the
common load) comes with its spread over the repeats that measured it
(common/spread.py). A winner is named only where its interval and the
runner-up's do not overlap, each resting on >= 3 repeats; otherwise the verdict
says there is no measurable difference on this machine, and gives both.

From a sweep, p50/p99 are compared at the sweep's common load: the lowest SLO
maximum any search of any target found, where every target was loaded again in
repeats. Invalid targets (an invalid saturation or common-load run) never win;
they are shown with their figures, labelled INVALID.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.spread import Spread, differ
from common.targets import Target, ordered, target_named
from report import fmt
from report.load import Loaded


@dataclass
class TargetRow:
    """One target in the verdict table: each figure a Spread over its repeats (None: not measured)."""

    target: str
    server: dict[str, Any]
    slo_max: Spread | None
    saturation: Spread | None
    offered_rps: float | None  # the load the latency figures were measured at (None: closed loop)
    p50: Spread | None
    p99: Spread | None
    failures: int
    ceiling_fraction: float | None
    ceiling_note: str
    valid: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def slo_max_rps(self) -> float | None:
        return self.slo_max.median if self.slo_max else None

    @property
    def saturation_rps(self) -> float | None:
        return self.saturation.median if self.saturation else None

    @property
    def p50_ms(self) -> float | None:
        return self.p50.median if self.p50 else None

    @property
    def p99_ms(self) -> float | None:
        return self.p99.median if self.p99 else None

    @property
    def comparable(self) -> bool:
        """Eligible to win on latency: a valid target with a p99."""
        return self.valid and self.p99 is not None

    @property
    def kind(self) -> Target:
        """What the target is (side, framework, transport)."""
        return target_named(self.target)


@dataclass
class Verdict:
    """The verdict table's rows and what they were measured at."""

    mode: str  # "sweep", "closed" or "open"
    loaded: Loaded
    rows: list[TargetRow]
    common_load: float | None
    load_label: str
    slo_ms: float | None

    @property
    def invalid_targets(self) -> set[str]:
        return {row.target for row in self.rows if not row.valid}


@dataclass(frozen=True)
class Ranking:
    """The best target on one figure, the runner-up, and whether the lead may be claimed."""

    best: TargetRow
    runner_up: TargetRow | None
    claimed: bool  # intervals apart, each from >= 3 repeats (a lone candidate is claimed as the only one)


def _ceiling(ceiling: dict[str, Any] | None, fraction: float | None = None) -> tuple[float | None, str]:
    """The fraction of the in-process ceiling (both writers record it with in_process_rps)."""
    if not ceiling:
        return None, "no in-process ceiling recorded"
    runtime = f", {ceiling['runtime']}" if ceiling.get("runtime") else ""
    return (fraction if fraction is not None else ceiling.get("fraction"),
            f"of {fmt.rps(ceiling.get('in_process_rps'))} req/s in process{runtime}")


def verdict_from_sweep(loaded: Loaded) -> Verdict:
    """Verdict rows from an SLO sweep, latency at its common load."""
    sweep = loaded.data
    load = sweep["common_load_rps"]
    rows = []
    for target in ordered(sweep["targets"]):
        entry = sweep["targets"][target]
        at_load = entry["at_common_load"] or {}
        reasons = entry["invalid_reasons"]
        fraction, note = _ceiling(entry["ceiling"])
        rows.append(TargetRow(
            target=target, server=entry["server"], slo_max=Spread.from_json(entry["slo_max"]),
            saturation=Spread.from_json(entry["saturation"]), offered_rps=at_load.get("offered_rps"),
            p50=Spread.from_json(at_load.get("p50_ms")), p99=Spread.from_json(at_load.get("p99_ms")),
            failures=sum(s["failures"] for s in entry["steps"]) + sum(r["failures"] for r in entry["saturation_runs"]),
            ceiling_fraction=fraction, ceiling_note=note, valid=not reasons, reasons=reasons))
    repeats = sweep["method"]["repeats"]
    label = (f"{load:,.1f} req/s offered (open loop, Poisson arrivals; the lowest SLO maximum found; "
             f"{repeats} repeats per target)" if load is not None else "no common load: no target has an SLO maximum")
    return Verdict("sweep", loaded, rows, load, label, sweep["slo_ms"])


def verdict_from_run(loaded: Loaded) -> Verdict:
    """Fallback without a sweep: one load-test run, every target at the run's own load, over its repeats."""
    run = loaded.data
    rows = []
    for target in ordered(run["targets"]):
        result = run["targets"][target]
        spread = result["spread"]
        fraction, note = _ceiling(result["ceiling"])
        rows.append(TargetRow(
            target=target, server=result["server"], slo_max=None,
            saturation=Spread.from_json(spread["throughput_rps"]), offered_rps=result["offered"]["rate_rps"],
            p50=Spread.from_json(spread["p50_ms"]), p99=Spread.from_json(spread["p99_ms"]),
            failures=result["failures"], ceiling_fraction=fraction, ceiling_note=note, valid=result["valid"],
            reasons=list(result["invalid_reasons"])))
    users = run["load"]["users"]
    label = (f"{run['mode']} loop, {users} users" +
             (f", {run['load']['rate_rps']:,.1f} req/s offered" if run["load"]["rate_rps"] else "") +
             f", {run['repeats']['count']} repeats")
    return Verdict("closed" if run["mode"] == "closed" else "open", loaded, rows, None, label, None)


def choose_verdict(sweeps: list[Loaded], summaries: list[Loaded], sweep_run_ids: set[str]) -> Verdict | None:
    """The newest sweep; without one, the newest closed-loop run that is not a sweep step (else any run)."""
    if sweeps:
        return verdict_from_sweep(sweeps[0])
    standalone = [s for s in summaries if s.data["run_id"] not in sweep_run_ids] or summaries
    closed = [s for s in standalone if s.data["mode"] == "closed"]
    chosen = (closed or standalone or [None])[0]
    return verdict_from_run(chosen) if chosen else None


def rank(rows: list[TargetRow], figure, higher_is_better: bool) -> Ranking | None:
    """The best valid target on `figure(row) -> Spread | None` (by median), and whether its lead can be claimed."""
    candidates = [r for r in rows if r.valid and figure(r) is not None]
    if not candidates:
        return None
    ordered_rows = sorted(candidates, key=lambda r: (figure(r).median, r.target), reverse=higher_is_better)
    best, runner_up = ordered_rows[0], (ordered_rows[1] if len(ordered_rows) > 1 else None)
    claimed = runner_up is None or differ(figure(best), figure(runner_up))
    return Ranking(best, runner_up, claimed)


def lowest_latency(rows: list[TargetRow]) -> Ranking | None:
    """Lowest p99 at the common load (or the run's load)."""
    return rank(rows, lambda r: r.p99, higher_is_better=False)


def highest_throughput(rows: list[TargetRow]) -> tuple[Ranking | None, str]:
    """Highest SLO maximum; the saturation throughput when no valid target has an SLO figure."""
    if any(r.valid and r.slo_max is not None for r in rows):
        return rank(rows, lambda r: r.slo_max, higher_is_better=True), "slo"
    return rank(rows, lambda r: r.saturation, higher_is_better=True), "saturation"
