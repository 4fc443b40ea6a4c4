"""The serving verdict computed from the numbers: the common offered load, each target's row, the winners.

Common offered load: the largest offered load L, taken from the valid steps of
the valid targets, at which every valid target has a valid step whose offered
load is within COMMON_LOAD_TOLERANCE of L. Each target's p50/p99 "at L" come
from its step nearest to L. Invalid targets do not constrain L (a saturated
generator must not pull the comparison down) and never win; they are shown
with their nearest step, labelled INVALID.

Each target is judged by its own figures only: a sweep target by its steps, a
run's target by its own result. The file-level `valid` flag of summary.json and
sweep.json is built from those same targets (a run is invalid when any target
is), so it never voids the other targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.targets import Target, ordered, target_named
from report import fmt
from report.load import Loaded

COMMON_LOAD_TOLERANCE = 0.10


@dataclass
class TargetRow:
    """One target in the verdict table."""

    target: str
    server: dict[str, Any]
    slo_max_rps: float | None
    saturation_rps: float | None
    offered_rps: float | None  # the step (or run) the latency columns come from
    p50_ms: float | None
    p99_ms: float | None
    failures: int
    ceiling_fraction: float | None
    ceiling_note: str
    valid: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def comparable(self) -> bool:
        """Eligible to win: a valid target whose latency figures come from a valid step."""
        return self.valid and self.p99_ms is not None

    @property
    def kind(self) -> Target:
        """What the target is (side, framework, transport)."""
        return target_named(self.target)


@dataclass
class Verdict:
    """The verdict table's rows and what they were measured at."""

    mode: str  # "sweep" or "closed"
    loaded: Loaded
    rows: list[TargetRow]
    common_load: float | None
    load_label: str
    slo_ms: float | None

    @property
    def invalid_targets(self) -> set[str]:
        return {row.target for row in self.rows if not row.valid}


def _within(step: dict[str, Any], load: float) -> bool:
    return abs(step["offered_rps"] - load) <= COMMON_LOAD_TOLERANCE * load


def nearest_step(steps: list[dict[str, Any]], load: float, valid_only: bool) -> dict[str, Any] | None:
    """The step nearest to `load` within the tolerance (ties go to the lower load)."""
    near = [s for s in steps if _within(s, load) and (s["valid"] or not valid_only)]
    return min(near, key=lambda s: (abs(s["offered_rps"] - load), s["offered_rps"])) if near else None


def common_load(steps_by_target: dict[str, list[dict[str, Any]]]) -> float | None:
    """The largest valid-step offered load that every target matches with a valid step (see module doc)."""
    candidates = sorted({s["offered_rps"] for steps in steps_by_target.values() for s in steps if s["valid"]},
                        reverse=True)
    for load in candidates:
        if all(nearest_step(steps, load, valid_only=True) for steps in steps_by_target.values()):
            return load
    return None


def sweep_target_reasons(entry: dict[str, Any]) -> list[str]:
    """Why a sweep target cannot count, from its own steps: it has no valid step."""
    return [] if any(step["valid"] for step in entry["steps"]) else ["no valid step"]


def _ceiling(ceiling: dict[str, Any] | None) -> tuple[float | None, str]:
    """The recorded fraction of the in-process ceiling (both writers record it with in_process_rps)."""
    if not ceiling:
        return None, "no in-process ceiling recorded"
    runtime = f", {ceiling['runtime']}" if ceiling.get("runtime") else ""
    return ceiling.get("fraction"), f"of {fmt.rps(ceiling.get('in_process_rps'))} req/s in process{runtime}"


def _step_reason(step: dict[str, Any]) -> str:
    why = "; ".join(step.get("invalid_reasons", [])) or "no reason recorded"
    return f"step at {step['offered_rps']:,.1f} req/s invalid: {why}"


def verdict_from_sweep(loaded: Loaded) -> Verdict:
    """Verdict rows from an SLO sweep, latency at the common offered load."""
    sweep = loaded.data
    reasons_of = {t: sweep_target_reasons(e) for t, e in sweep["targets"].items()}
    load = common_load({t: e["steps"] for t, e in sweep["targets"].items() if not reasons_of[t]})
    rows = []
    for target in ordered(sweep["targets"]):
        entry = sweep["targets"][target]
        step = nearest_step(entry["steps"], load, valid_only=not reasons_of[target]) if load is not None else None
        reasons = reasons_of[target] + ([_step_reason(step)] if step and not step["valid"] else [])
        fraction, note = _ceiling(entry["ceiling"])
        rows.append(TargetRow(
            target=target, server=entry["server"], slo_max_rps=entry["slo_max_rps"],
            saturation_rps=entry["saturation_rps"], offered_rps=step["offered_rps"] if step else None,
            p50_ms=step["latency_ms"]["p50"] if step else None, p99_ms=step["latency_ms"]["p99"] if step else None,
            failures=sum(s["failures"] for s in entry["steps"]), ceiling_fraction=fraction, ceiling_note=note,
            valid=not reasons, reasons=reasons))
    label = (f"{load:,.1f} req/s offered (open loop; each target's nearest step within "
             f"{COMMON_LOAD_TOLERANCE:.0%})" if load is not None else "no offered load common to all valid targets")
    return Verdict("sweep", loaded, rows, load, label, sweep["slo_ms"])


def verdict_from_run(loaded: Loaded) -> Verdict:
    """Fallback without a sweep: one load-test run, every target at the run's own load."""
    run = loaded.data
    rows = []
    for target in ordered(run["targets"]):
        result = run["targets"][target]
        fraction, note = _ceiling(result["ceiling"])
        rows.append(TargetRow(
            target=target, server=result["server"], slo_max_rps=None, saturation_rps=result["throughput_rps"],
            offered_rps=result["offered"]["rate_rps"], p50_ms=result["latency_ms"]["p50"],
            p99_ms=result["latency_ms"]["p99"], failures=result["failures"], ceiling_fraction=fraction,
            ceiling_note=note, valid=result["valid"], reasons=list(result["invalid_reasons"])))
    users = run["load"]["users"]
    label = (f"{run['mode']} loop, {users} users" +
             (f", {run['load']['rate_rps']:,.1f} req/s offered" if run["load"]["rate_rps"] else ""))
    return Verdict("closed" if run["mode"] == "closed" else "open", loaded, rows, None, label, None)


def choose_verdict(sweeps: list[Loaded], summaries: list[Loaded], sweep_run_ids: set[str]) -> Verdict | None:
    """The newest sweep; without one, the newest closed-loop run that is not a sweep step (else any run)."""
    if sweeps:
        return verdict_from_sweep(sweeps[0])
    standalone = [s for s in summaries if s.data["run_id"] not in sweep_run_ids] or summaries
    closed = [s for s in standalone if s.data["mode"] == "closed"]
    chosen = (closed or standalone or [None])[0]
    return verdict_from_run(chosen) if chosen else None


def lowest_latency(rows: list[TargetRow]) -> TargetRow | None:
    candidates = [r for r in rows if r.comparable]
    if not candidates:
        return None
    return min(candidates, key=lambda r: (r.p99_ms, r.p50_ms is None, r.p50_ms or 0.0, r.target))


def highest_throughput(rows: list[TargetRow]) -> tuple[TargetRow | None, str]:
    """Highest SLO-bounded throughput; the saturation throughput when no target has an SLO figure."""
    valid = [r for r in rows if r.valid]
    if any(r.slo_max_rps is not None for r in valid):
        best = max((r for r in valid if r.slo_max_rps is not None), key=lambda r: (r.slo_max_rps, r.target))
        return best, "slo"
    with_saturation = [r for r in valid if r.saturation_rps is not None]
    best = max(with_saturation, key=lambda r: (r.saturation_rps, r.target)) if with_saturation else None
    return best, "saturation"
