"""Open-loop arrivals: the gaps between one user's requests (imported by the locustfile, testable without locust)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator


def arrival_gaps(kind: str, mean_s: float, seed: int, slot: int) -> Iterator[float]:
    """One user's seconds between arrivals: exponential with this mean (Poisson), or fixed.

    Each user draws from its own stream, seeded by the run's seed and the user's slot, so a
    run's arrivals are the same every time and the users' Poisson processes are independent
    (together: one Poisson process at the total rate, as MLPerf's Server scenario).
    """
    if kind == "fixed":
        return itertools.repeat(mean_s)
    stream = random.Random(f"{seed}/{slot}")
    return (stream.expovariate(1.0 / mean_s) for _ in itertools.count())
