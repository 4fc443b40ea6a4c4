"""The SLO maximum by search: the highest offered rate whose probe meets the SLO, bracketed then bisected.

As perf_analyzer's binary search and MLPerf LoadGen's peak-performance mode do,
and unlike a fixed grid of load steps, the answer does not depend on where the
grid happened to put its steps:

1. probe the closed-loop saturation rate; if it meets the SLO, probe 25 % higher
   (at most GROWTH_STEPS times) until one does not; otherwise halve (at most
   HALVING_STEPS times) until one does. That brackets the answer between the
   last passing and the first failing rate;
2. bisect the bracket until it is within `tolerance` of the failing rate.

A probe meets the SLO when it is valid (no failures, no dropped arrivals,
achieved >= 95 % of offered, generator not saturated) and its p99, resting on
enough requests to be reported, is within the SLO. A probe the generator could
not drive (saturated, sending late) ends the search: what was found so far is a
lower bound, and the result says so. Two cases are the server's all the same:
it answered errors in that probe (HTTP 503, gRPC INTERNAL, ...), or the
generator, its core not saturated, sent late while the server fell behind
(answered under 95 % of the arrivals, or so slowly that arrivals were dropped):
a late sender offers less load, never more, so the probe failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GROWTH = 1.25
GROWTH_STEPS = 3
HALVING_STEPS = 4
SATURATED, SENT_LATE = "load generator saturated", "open loop fell behind"  # the runner's reasons
GENERATOR_REASONS = (SATURATED, SENT_LATE)
# Failure kinds a stalled client produces on its own (its deadline passed, its connection gave up);
# every other kind is an error the server answered.
CLIENT_SIDE_FAILURES = ("DEADLINE_EXCEEDED", "CANCELLED", "connection_error")
# The runner's reasons for an open loop whose server did not keep up (loadtests/runner.py validity()).
SERVER_BEHIND = "server fell behind"
ARRIVALS_DROPPED = " arrivals dropped: "


@dataclass
class SearchResult:
    """The highest passing offered rate (None if none passed), every probe, and how the search ended."""

    slo_max_rps: float | None
    probes: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"slo_max_rps": self.slo_max_rps, "probes": self.probes, "note": self.note}


def outcome(step: dict[str, Any], slo_ms: float) -> str:
    """'pass', 'fail' (the server's doing) or 'generator' (the generator's: the probe says nothing of the server)."""
    if generator_limited(step):
        return "generator"
    p99 = step["latency_ms"]["p99"]
    return "pass" if step["valid"] and p99 is not None and p99 <= slo_ms else "fail"


def generator_limited(step: dict[str, Any]) -> bool:
    """Whether the generator, not the server, may have set the probe's pace (see the module's docstring)."""
    reasons = step["invalid_reasons"]
    if not any(reason.startswith(GENERATOR_REASONS) for reason in reasons) or server_errors(step):
        return False
    saturated = any(reason.startswith(SATURATED) for reason in reasons)
    server_behind = any(reason.startswith(SERVER_BEHIND) or ARRIVALS_DROPPED in reason for reason in reasons)
    return saturated or not server_behind


def server_errors(step: dict[str, Any]) -> int:
    """How many of a step's requests the server answered with an error (not counting client-side timeouts)."""
    return sum(count for kind, count in step.get("failures_by_kind", {}).items() if kind not in CLIENT_SIDE_FAILURES)


class _Search:
    def __init__(self, probe: Callable[[float], dict[str, Any]], slo_ms: float) -> None:
        self.probe, self.slo_ms = probe, slo_ms
        self.probes: list[dict[str, Any]] = []

    def passes(self, rate: float) -> bool | None:
        """Whether `rate` meets the SLO; None when the generator could not drive the probe."""
        step = self.probe(round(rate, 1))
        result = outcome(step, self.slo_ms)
        self.probes.append({**step, "outcome": result})
        return None if result == "generator" else result == "pass"


def search_slo_max(probe: Callable[[float], dict[str, Any]], start_rps: float, slo_ms: float,
                   tolerance: float = 0.05) -> SearchResult:
    """Bracket then bisect from `start_rps`; `probe(rate)` runs one open-loop step and returns its record."""
    search = _Search(probe, slo_ms)
    low, high, note = _bracket(search, start_rps)
    while note == "" and low is not None and high is not None and (high - low) > tolerance * high:
        middle = (low + high) / 2
        passed = search.passes(middle)
        if passed is None:
            note = f"stopped at {middle:.1f} req/s: the generator could not drive it; the SLO max is a lower bound"
        elif passed:
            low = middle
        else:
            high = middle
    if not note and low is not None and high is not None:
        note = f"bracketed between {low:.1f} (met) and {high:.1f} req/s (missed), within {tolerance:.0%}"
    return SearchResult(round(low, 1) if low is not None else None, search.probes, note)


def _bracket(search: _Search, start: float) -> tuple[float | None, float | None, str]:
    """(last passing rate, first failing rate, a note when the search cannot go on)."""
    passed = search.passes(start)
    if passed is None:
        return None, None, f"the generator could not drive {start:.1f} req/s"
    if passed:
        low = start
        for _ in range(GROWTH_STEPS):
            rate = low * GROWTH
            passed = search.passes(rate)
            if passed is None:
                return low, None, f"stopped at {rate:.1f} req/s: the generator could not drive it; lower bound"
            if not passed:
                return low, rate, ""
            low = rate
        return low, None, f"met the SLO at every rate tried, up to {low:.1f} req/s: a lower bound"
    high = start
    for _ in range(HALVING_STEPS):
        rate = high / 2
        passed = search.passes(rate)
        if passed is None:
            return None, high, f"stopped at {rate:.1f} req/s: the generator could not drive it"
        if passed:
            return rate, high, ""
        high = rate
    return None, high, f"no rate down to {high:.1f} req/s met the SLO"
