"""Soak: steady load at 70 % of the SLO-bounded maximum for minutes; the server's memory sampled all along.

A leak shows as growth that does not level off: the report gives RSS at the start of the steady part, at the
end and at its highest, and the least-squares slope over the steady part in MiB per minute. The first
`SETTLE_SHARE` of the run is left out of the slope (allocators, caches and JIT warm up there).
"""

from __future__ import annotations

import statistics

from common.errors import UsageError
from loadtests.server_stats import GroupSampler
from reliability.baselines import newest_sweep_figure
from reliability.chaos import Stage
from reliability.traffic import Load

SOAK_SHARE_OF_SLO_MAX = 0.7
SETTLE_SHARE = 0.2
SAMPLE_EVERY_S = 5.0


def soak_rate(stage: Stage, target: str, rate: float | None) -> tuple[float, str]:
    """The rate to hold and where it came from: --rate, else 70 % of the newest sweep's SLO maximum."""
    if rate:
        return rate, "--rate"
    found = newest_sweep_figure(stage.cfg.paths.results_dir, target, "slo_max")
    if not found:
        raise UsageError(f"no sweep has an SLO maximum for {target}; run 'make sweep' first or pass --rate")
    slo_max, sweep = found
    return round(SOAK_SHARE_OF_SLO_MAX * slo_max, 1), f"{SOAK_SHARE_OF_SLO_MAX:.0%} of {slo_max:.1f} req/s ({sweep})"


def growth(series: list[tuple[float, float]]) -> dict | None:
    """RSS start / end / max and the slope in MiB per minute over the steady part (after SETTLE_SHARE)."""
    if len(series) < 4:
        return None
    steady = [point for point in series if point[0] >= SETTLE_SHARE * series[-1][0]]
    times, values = [t / 60.0 for t, _ in steady], [v for _, v in steady]
    slope = statistics.linear_regression(times, values).slope if len(set(times)) > 1 else 0.0
    return {"start_mib": values[0], "end_mib": values[-1], "max_mib": max(values),
            "growth_mib": round(values[-1] - values[0], 1), "slope_mib_per_min": round(slope, 2),
            "samples": len(series), "settle_s": round(steady[0][0], 1)}


def soak(stage: Stage, target_name: str, minutes: float, rate: float | None = None) -> dict:
    """Hold the soak rate on one target for `minutes`; RSS of the server's whole process group every 5 s."""
    target = stage.target(target_name)
    if not target.record or not target.record.pgid:
        raise UsageError(f"{target_name}: the server's processes are not known (a compose service?); "
                         "soak samples the memory of servers deploy started natively")
    offered, source = soak_rate(stage, target_name, rate)
    sampler = GroupSampler(target.record.pgid, every_s=SAMPLE_EVERY_S)
    with stage.traffic(target, "soak", Load(offered, minutes * 60.0)) as traffic:
        sampler.start()
    server = sampler.stop()
    series = sampler.rss_series()
    timeline = traffic.timeline()
    return {"stack": target.side, "target": target.name, "minutes": minutes, "offered_rps": offered,
            "rate_from": source, **timeline.summary(timeline.started), "dropped_by_generator": timeline.dropped,
            "cpu_percent": server["cpu_percent"], "rss": growth(series), "rss_series": [list(p) for p in series]}
