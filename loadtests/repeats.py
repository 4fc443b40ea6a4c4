"""Repeats: the order targets are loaded in, and one target's repeats folded into one entry with spreads.

A figure that can enter a verdict is measured in independent repeats (a fresh
locust process each time) and reported as its median with its min-max spread
(common/spread.py). The targets take turns within each repeat, and the order
rotates from one repeat to the next, so that no target always runs first on a
cold machine or last on a warm one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from common.spread import Spread

# What each repeat keeps of its own: the rest (server, ceiling, ...) is the same in every repeat.
PER_REPEAT = ("repeat", "requests", "failures", "failures_by_kind", "dropped", "checked_responses",
              "measured_window_s", "throughput_rps", "images_per_s", "offered", "latency_ms", "generator",
              "server_side", "valid", "invalid_reasons", "files")


def rotated(items: list[Any] | tuple[Any, ...], repeat: int) -> list[Any]:
    """The items starting at position `repeat` (mod their count): repeat 0 keeps the given order."""
    items = list(items)
    if not items:
        return items
    shift = repeat % len(items)
    return items[shift:] + items[:shift]


def spread_of(results: list[dict[str, Any]], key: str) -> Spread | None:
    """The spread of one figure over repeats: throughput_rps, or a latency percentile as 'p99_ms'."""
    if key.endswith("_ms"):
        return Spread.of([r["latency_ms"].get(key.removesuffix("_ms")) for r in results])
    return Spread.of([r[key] for r in results])


def _median_latency(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """Each percentile's median over the repeats that report it (None when none does)."""
    keys = results[0]["latency_ms"].keys()
    medians = {key: Spread.of([r["latency_ms"][key] for r in results]) for key in keys if key != "samples"}
    latency: dict[str, Any] = {key: spread.median if spread else None for key, spread in medians.items()}
    latency["samples"] = sum(r["latency_ms"].get("samples", 0) for r in results)
    return latency


def _generator(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The busiest the generator was in any repeat."""
    cpu = [r["generator"]["cpu_percent"] for r in results if r["generator"]["cpu_percent"] is not None]
    lags = [r["generator"]["send_lag_ms_p99"] for r in results if r["generator"]["send_lag_ms_p99"] is not None]
    return {"cpu_percent": max(cpu) if cpu else None, "saturated": any(r["generator"]["saturated"] for r in results),
            "send_lag_ms_p99": max(lags) if lags else None}


def fold(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One target's entry from its repeats: medians as the figures, counts summed, valid only if every repeat is.

    `spread` holds the verdict's figures with their min-max; `repeats` every repeat as measured.
    """
    first = results[0]
    throughput = spread_of(results, "throughput_rps")
    failures_by_kind: Counter[str] = Counter()
    for result in results:
        failures_by_kind.update(result["failures_by_kind"])
    ceiling = first.get("ceiling")
    if ceiling and throughput:
        ceiling = {**ceiling, "fraction": throughput.median / ceiling["in_process_rps"]}
    return {
        "target": first["target"], "framework": first["framework"], "transport": first["transport"],
        "server": first["server"], "requests": sum(r["requests"] for r in results),
        "failures": sum(r["failures"] for r in results), "failures_by_kind": dict(sorted(failures_by_kind.items())),
        "dropped": sum(r["dropped"] for r in results),
        "checked_responses": sum(r["checked_responses"] for r in results),
        "measured_window_s": sum(r["measured_window_s"] for r in results),
        "throughput_rps": throughput.median if throughput else 0.0,
        "images_per_s": Spread.of([r["images_per_s"] for r in results]).median,
        "offered": {key: value for key, value in first["offered"].items() if key not in ("seed", "measured_rps")},
        "latency_ms": _median_latency(results), "generator": _generator(results), "ceiling": ceiling,
        "valid": all(r["valid"] for r in results),
        "invalid_reasons": [f"repeat {r['repeat']}: {reason}" if len(results) > 1 else reason
                            for r in results for reason in r["invalid_reasons"]],
        "spread": {key: _json(spread_of(results, key)) for key in ("throughput_rps", "p50_ms", "p99_ms")},
        "repeats": [{key: r[key] for key in PER_REPEAT if key in r} for r in results],
    }


def _json(spread: Spread | None) -> dict[str, Any] | None:
    return spread.as_json() if spread else None
